UNWIND $rows AS r
MERGE (x:Reference {story_id: $story, id: r.target_id})
SET x.kind = r.role
