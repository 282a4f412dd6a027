MATCH (n:Appearance {story_id: $story})
RETURN count(n) AS n
