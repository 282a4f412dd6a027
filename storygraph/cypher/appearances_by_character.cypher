MATCH (a:Appearance {story_id: $story, character_id: $character})
WHERE a.accepted OR NOT $accepted_only
RETURN a.id AS id, a.character_id AS character_id, a.scene_id AS scene_id, a.take AS take,
       a.frame_index AS frame_index, a.frame_path AS frame_path, a.strength AS strength,
       a.reinforced_clock AS reinforced_clock, a.identity_score AS identity_score, a.clock AS clock,
       a.branch AS branch, a.pos AS pos, a.accepted AS accepted, a.uses AS uses,
       a.clip AS clip,
       a.dino AS dino
ORDER BY clock, id
