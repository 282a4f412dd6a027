MATCH (s:Scene {story_id: $story})
WHERE s.status = $status
RETURN properties(s) AS scene
ORDER BY s.clock, s.pos, s.id
