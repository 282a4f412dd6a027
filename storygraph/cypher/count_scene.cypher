MATCH (n:Scene {story_id: $story})
RETURN count(n) AS n
