MATCH (a:Appearance {story_id: $story, scene_id: $id})
WITH a, a.id AS id
DETACH DELETE a
RETURN id
