MATCH (n:Environment {story_id: $story})
RETURN count(n) AS n
