MATCH (a:Appearance {story_id: $story})
WHERE a.accepted
RETURN a.id AS id, a.character_id AS character_id
