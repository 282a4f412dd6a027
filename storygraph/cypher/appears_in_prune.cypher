UNWIND $ids AS sid
MATCH (c:Character)-[r:APPEARS_IN]->(s:Scene {story_id: $story, id: sid})
WHERE NOT c.id IN s.characters
DELETE r
