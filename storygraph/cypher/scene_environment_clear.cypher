UNWIND $ids AS sid
MATCH (s:Scene {story_id: $story, id: sid})-[r:SET_IN]->(e:Environment)
WHERE s.environment IS NULL OR e.id <> s.environment
DELETE r
