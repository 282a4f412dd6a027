UNWIND $rows AS r
MATCH (a:Scene {story_id: $story, id: r.from_id})-[n:NEXT]->(b:Scene {story_id: $story, id: r.to_id})
DELETE n
