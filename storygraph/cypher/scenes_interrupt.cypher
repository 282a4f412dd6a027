MATCH (s:Scene {story_id: $story})
WHERE s.status = 'generating'
SET s.status = 'interrupted', s.notes = s.notes + $note, s.updated_at = $now
RETURN s.id AS id
