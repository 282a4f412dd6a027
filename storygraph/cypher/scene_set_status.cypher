MATCH (s:Scene {story_id: $story, id: $id})
SET s.status = $status, s.notes = s.notes + $note, s.updated_at = $now
RETURN s.status AS status
