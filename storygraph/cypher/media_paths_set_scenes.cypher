UNWIND $rows AS r
MATCH (s:Scene {story_id: $story, id: r.id})
SET s.video_path = r.video_path, s.last_frame_path = r.last_frame_path, s.frames_dir = r.frames_dir
