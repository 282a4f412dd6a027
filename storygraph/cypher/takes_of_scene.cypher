MATCH (s:Scene {story_id: $story, id: $scene})-[:HAS_TAKE]->(t:Take)
RETURN properties(t) AS take
ORDER BY t.take
