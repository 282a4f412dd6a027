UNWIND $ids AS sid
MATCH (s:Scene {story_id: $story, id: sid})
RETURN s.id AS id, s.clock AS clock, s.chosen_take AS chosen_take, s.status AS status
