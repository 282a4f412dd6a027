MATCH (s:Scene {story_id: $story, id: $id})
RETURN properties(s) AS scene
