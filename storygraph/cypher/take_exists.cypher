MATCH (t:Take {story_id: $story, id: $id})
RETURN t.id AS id
