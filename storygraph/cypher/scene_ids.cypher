MATCH (s:Scene {story_id: $story})
RETURN s.id AS id
