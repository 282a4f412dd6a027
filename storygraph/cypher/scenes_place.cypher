UNWIND $rows AS r
MATCH (s:Scene {story_id: $story, id: r.id})
SET s.clock = r.clock, s.branch = r.branch, s.pos = r.pos, s.parent_id = r.parent_id
