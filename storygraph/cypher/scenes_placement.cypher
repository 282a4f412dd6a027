UNWIND $ids AS sid
MATCH (s:Scene {story_id: $story, id: sid})
RETURN s.id AS id, s.clock AS clock, s.branch AS branch, s.pos AS pos
