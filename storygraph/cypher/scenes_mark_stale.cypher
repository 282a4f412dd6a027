UNWIND $rows AS r
MATCH (s:Scene {story_id: $story, id: r.id})
WHERE s.status <> 'generating' AND s.chosen_take IS NOT NULL AND coalesce(s.stale_reason, '') = ''
SET s.status = CASE WHEN s.status = 'done' THEN 'stale' ELSE s.status END, s.stale_reason = r.reason,
    s.stale_from = r.origin, s.updated_at = $now
RETURN s.id AS id
