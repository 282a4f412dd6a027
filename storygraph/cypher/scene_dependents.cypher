MATCH (c:Scene {story_id: $story})-[:CONDITIONED_ON]->(s:Scene {story_id: $story, id: $id})
WHERE c.id <> $id
RETURN DISTINCT c.id AS id
