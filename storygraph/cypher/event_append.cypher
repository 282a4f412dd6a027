MERGE (c:Counter {name: $story})
ON CREATE SET c.value = 0
SET c.value = c.value + 1
WITH c
CREATE (e:Event {story_id: $story, seq: c.value, kind: $kind, ref_id: $ref_id, at: $at, payload: $payload})
RETURN e.seq AS seq
