UNWIND $ids AS sid
MATCH (s:Scene {story_id: $story, id: sid})-[:HAS_TAKE]->(t:Take)
DETACH DELETE t
