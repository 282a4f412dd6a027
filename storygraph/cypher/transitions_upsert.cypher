UNWIND $rows AS r
MATCH (a:Scene {story_id: $story, id: r.from_id})
MATCH (b:Scene {story_id: $story, id: r.to_id})
MERGE (a)-[n:NEXT]->(b)
SET n.kind = r.kind, n.gap = r.gap, n.decay = r.decay
