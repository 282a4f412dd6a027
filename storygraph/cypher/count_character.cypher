MATCH (n:Character {story_id: $story})
RETURN count(n) AS n
