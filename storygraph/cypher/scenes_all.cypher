MATCH (s:Scene {story_id: $story})
RETURN properties(s) AS scene
ORDER BY s.clock, s.pos, s.id
