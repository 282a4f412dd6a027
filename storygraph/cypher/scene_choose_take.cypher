MATCH (s:Scene {story_id: $story, id: $scene})-[:HAS_TAKE]->(t:Take)
SET t.chosen = (t.take = $take)
WITH s, t
WHERE t.take = $take
SET s.status = 'done', s.chosen_take = t.take, s.prompt = t.prompt, s.video_path = t.video_path,
    s.last_frame_path = t.last_frame_path, s.frames_dir = t.frames_dir, s.text_alignment = t.text_alignment,
    s.subject_consistency = t.subject_consistency, s.background_consistency = t.background_consistency,
    s.identity = t.identity, s.transition_smoothness = t.transition_smoothness, s.updated_at = $now,
    s.stale_reason = '', s.stale_from = ''
RETURN t.take AS take
