MATCH (c:Scene {story_id: $story})-[:CONDITIONED_ON]->(a:Appearance {story_id: $story, scene_id: $id})
WHERE c.id <> $id
RETURN DISTINCT c.id AS id
