UNWIND $ids AS sid
MATCH (s:Scene {story_id: $story, id: sid})
MATCH (e:Environment {story_id: $story, id: s.environment})
MERGE (s)-[:SET_IN]->(e)
