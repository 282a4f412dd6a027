UNWIND $rows AS r
MATCH (c:Character {story_id: $story, id: r.character})
MATCH (s:Scene {story_id: $story, id: r.scene})
MERGE (c)-[a:APPEARS_IN]->(s)
ON CREATE SET a.strength = $strength, a.last_seen_clock = s.clock
