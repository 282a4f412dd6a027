MATCH (a:Appearance {story_id: $story})
WHERE a.frame_path STARTS WITH '/'
RETURN a.id AS id, a.frame_path AS frame_path
