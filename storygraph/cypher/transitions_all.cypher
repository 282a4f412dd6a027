MATCH (a:Scene {story_id: $story})-[n:NEXT]->(b:Scene)
RETURN a.id AS from_id, b.id AS to_id, n.kind AS kind, n.gap AS gap, n.decay AS decay
ORDER BY from_id, to_id
