MATCH (s:Scene {story_id: $story, id: $id})
DETACH DELETE s
