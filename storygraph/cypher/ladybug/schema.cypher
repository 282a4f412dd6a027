CREATE NODE TABLE IF NOT EXISTS Story(id STRING, story_id STRING, title STRING, source_path STRING, defaults STRING, created_at STRING, memory_index INT64, PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Character(id STRING, story_id STRING, name STRING, description STRING, reference_path STRING, decay_tau DOUBLE, reference_sha STRING, PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Environment(id STRING, story_id STRING, name STRING, description STRING, reference_path STRING, reference_sha STRING, PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Scene(id STRING, story_id STRING, title STRING, action STRING, characters STRING[], environment STRING, lighting STRING, weather STRING, camera STRING, width INT64, height INT64, frames INT64, fps DOUBLE, seed INT64, steps INT64, guidance DOUBLE, negative_prompt STRING, refs STRING, clock DOUBLE, branch STRING, pos INT64, parent_id STRING, status STRING, prompt STRING, video_path STRING, last_frame_path STRING, frames_dir STRING, chosen_take INT64, takes INT64, notes STRING, text_alignment DOUBLE, subject_consistency DOUBLE, background_consistency DOUBLE, identity DOUBLE, transition_smoothness DOUBLE, created_at STRING, updated_at STRING, memory STRING, stale_reason STRING, stale_from STRING, PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Take(id STRING, story_id STRING, scene_id STRING, take INT64, seed INT64, prompt STRING, video_path STRING, last_frame_path STRING, frames_dir STRING, text_alignment DOUBLE, subject_consistency DOUBLE, background_consistency DOUBLE, identity DOUBLE, transition_smoothness DOUBLE, identity_by_character STRING, request_key STRING, chosen BOOLEAN, created_at STRING, PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Appearance(id STRING, story_id STRING, character_id STRING, scene_id STRING, take INT64, frame_index INT64, frame_path STRING, strength DOUBLE, reinforced_clock DOUBLE, identity_score DOUBLE, clock DOUBLE, branch STRING, pos INT64, accepted BOOLEAN, clip FLOAT[], dino FLOAT[], uses STRING[], PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Reference(id STRING, story_id STRING, kind STRING, PRIMARY KEY(id));
CREATE NODE TABLE IF NOT EXISTS Event(seq INT64, story_id STRING, kind STRING, ref_id STRING, at STRING, payload STRING, PRIMARY KEY(seq));
CREATE NODE TABLE IF NOT EXISTS Counter(name STRING, value INT64, PRIMARY KEY(name));
CREATE REL TABLE IF NOT EXISTS HAS_SCENE(FROM Story TO Scene);
CREATE REL TABLE IF NOT EXISTS SET_IN(FROM Scene TO Environment);
CREATE REL TABLE IF NOT EXISTS NEXT(FROM Scene TO Scene, kind STRING, gap DOUBLE, decay DOUBLE);
CREATE REL TABLE IF NOT EXISTS APPEARS_IN(FROM Character TO Scene, strength DOUBLE, last_seen_clock DOUBLE, identity DOUBLE);
CREATE REL TABLE IF NOT EXISTS OF(FROM Appearance TO Character);
CREATE REL TABLE IF NOT EXISTS `IN`(FROM Appearance TO Scene);
CREATE REL TABLE IF NOT EXISTS HAS_TAKE(FROM Scene TO Take);
CREATE REL TABLE IF NOT EXISTS CONDITIONED_ON(FROM Scene TO Appearance, FROM Scene TO Scene, FROM Scene TO Reference, take INT64, role STRING, frame_index INT64, strength DOUBLE, score DOUBLE, reason STRING, mode STRING)
