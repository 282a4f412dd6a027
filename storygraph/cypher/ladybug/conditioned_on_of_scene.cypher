MATCH (s:Scene {story_id: $story, id: $scene})-[r:CONDITIONED_ON]->(t)
WHERE r.take = coalesce($take, s.chosen_take)
RETURN r.role AS role, label(t) AS target_kind, t.id AS target_id, r.frame_index AS frame_index,
       r.strength AS strength, r.score AS score, r.reason AS reason, r.mode AS mode
ORDER BY frame_index, target_id
