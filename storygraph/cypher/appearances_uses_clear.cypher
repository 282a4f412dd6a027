MATCH (a:Appearance {story_id: $story})
WHERE a.uses IS NOT NULL
SET a.uses = NULL
