UNWIND $ids AS aid
MATCH (u:Scene {story_id: $story})-[r:CONDITIONED_ON]->(a:Appearance {story_id: $story, id: aid})
WHERE r.take = u.chosen_take
MATCH (u)-[:HAS_TAKE]->(t:Take)
WHERE t.take = u.chosen_take
RETURN aid AS id, a.character_id AS character_id, u.id AS scene_id, u.clock AS clock, u.branch AS branch,
       u.pos AS pos, t.identity_by_character AS identities
