MATCH (s:Scene {story_id: $story})
WHERE s.video_path STARTS WITH '/' OR s.last_frame_path STARTS WITH '/' OR s.frames_dir STARTS WITH '/'
RETURN s.id AS id, s.video_path AS video_path, s.last_frame_path AS last_frame_path, s.frames_dir AS frames_dir
