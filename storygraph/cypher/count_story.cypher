MATCH (n:Story {story_id: $story})
RETURN count(n) AS n
