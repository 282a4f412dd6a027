UNWIND $rows AS r
MATCH (a:Scene {story_id: $story})-[n:NEXT]->(b:Scene {story_id: $story, id: r.to_id})
WHERE a.id <> r.from_id
DELETE n
