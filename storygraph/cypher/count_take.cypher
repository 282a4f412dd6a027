MATCH (n:Take {story_id: $story})
RETURN count(n) AS n
