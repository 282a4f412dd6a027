MATCH (t:Take {story_id: $story})
WHERE t.video_path STARTS WITH '/' OR t.last_frame_path STARTS WITH '/' OR t.frames_dir STARTS WITH '/'
RETURN t.id AS id, t.video_path AS video_path, t.last_frame_path AS last_frame_path, t.frames_dir AS frames_dir
