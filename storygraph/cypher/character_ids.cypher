MATCH (c:Character {story_id: $story})
RETURN c.id AS id
