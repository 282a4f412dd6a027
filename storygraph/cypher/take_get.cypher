MATCH (t:Take {story_id: $story, id: $id})
RETURN properties(t) AS take
