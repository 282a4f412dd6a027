MATCH (s:Scene {story_id: $story, id: $scene})
CREATE (t:Take {story_id: $story, id: $id, scene_id: $scene, take: $take, seed: $seed, prompt: $prompt,
        video_path: $video_path, last_frame_path: $last_frame_path, frames_dir: $frames_dir,
        text_alignment: $text_alignment, subject_consistency: $subject_consistency,
        background_consistency: $background_consistency, identity: $identity,
        transition_smoothness: $transition_smoothness, identity_by_character: $identity_by_character, request_key: $request_key,
        chosen: false, created_at: $now})
CREATE (s)-[:HAS_TAKE]->(t)
SET s.takes = s.takes + 1
RETURN t.id AS id
