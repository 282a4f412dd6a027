MATCH (e:Environment {story_id: $story})
RETURN e.id AS id
