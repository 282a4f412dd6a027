MATCH (y:Scene {story_id: $story})
WHERE y.chosen_take IS NOT NULL AND y.clock >= $from_clock
OPTIONAL MATCH (y)-[r:CONDITIONED_ON]->(t)
WHERE r.take = y.chosen_take
RETURN y.id AS id, y.status AS status, y.characters AS characters, y.environment AS environment, y.clock AS clock,
       y.pos AS pos, label(t) AS kind, t.id AS target, t.scene_id AS target_scene
