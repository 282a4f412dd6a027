UNWIND $rows AS r
MATCH (a:Appearance {story_id: $story, id: r.id})
SET a.frame_path = r.frame_path
