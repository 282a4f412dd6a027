UNWIND $rows AS r
MATCH (t:Take {story_id: $story, id: r.id})
SET t.video_path = r.video_path, t.last_frame_path = r.last_frame_path, t.frames_dir = r.frames_dir
