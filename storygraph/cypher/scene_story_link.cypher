UNWIND $ids AS sid
MATCH (st:Story {id: $story})
MATCH (s:Scene {story_id: $story, id: sid})
MERGE (st)-[:HAS_SCENE]->(s)
