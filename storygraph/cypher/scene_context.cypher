MATCH (s:Scene {story_id: $story, id: $id})
OPTIONAL MATCH (p:Scene {story_id: $story, id: $parent})-[n:NEXT]->(s)
RETURN properties(p) AS parent, n.kind AS kind, n.gap AS gap, n.decay AS decay
