MATCH (s:Scene {story_id: $story, id: $id})
OPTIONAL MATCH (s)-[:SET_IN]->(e:Environment)
OPTIONAL MATCH (p:Scene)-[n:NEXT]->(s)
RETURN properties(s) AS scene, e.id AS env_id, e.name AS env_name, e.description AS env_description,
       e.reference_path AS env_reference, properties(p) AS parent, n.kind AS kind, n.gap AS gap, n.decay AS decay
