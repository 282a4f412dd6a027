MATCH (a:Appearance)-[:`IN`]->(s:Scene {story_id: $story, id: $scene})
WHERE a.take = $take
MATCH (c:Character {story_id: $story, id: a.character_id})-[r:APPEARS_IN]->(s)
SET r.strength = a.strength, r.last_seen_clock = s.clock, r.identity = a.identity_score
