MATCH (:Scene {story_id: $story, id: $id})-[:NEXT]->(c:Scene)
RETURN c.id AS id
ORDER BY id
