MATCH (e:Event {story_id: $story})
WHERE e.seq > $seq
RETURN e.seq AS seq, e.kind AS kind, e.ref_id AS ref_id, e.at AS at, e.payload AS payload
ORDER BY seq
LIMIT $limit
