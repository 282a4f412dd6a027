MATCH (t:Take {story_id: $story, scene_id: $id})
DETACH DELETE t
