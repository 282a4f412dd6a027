MATCH (u:Scene {story_id: $story})-[r:CONDITIONED_ON]->(a:Appearance)
WHERE r.take = u.chosen_take
MATCH (u)-[:HAS_TAKE]->(t:Take)
WHERE t.take = u.chosen_take
RETURN a.id AS id, a.character_id AS character_id, u.id AS scene_id, t.identity_by_character AS identities
