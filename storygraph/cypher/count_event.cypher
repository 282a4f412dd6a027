MATCH (n:Event {story_id: $story})
RETURN count(n) AS n
