UNWIND $rows AS r
MATCH (a:Appearance {story_id: $story, id: r.id})
SET a.strength = r.strength, a.reinforced_clock = r.clock
