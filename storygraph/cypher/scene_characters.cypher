MATCH (c:Character)-[a:APPEARS_IN]->(s:Scene {story_id: $story, id: $id})
RETURN c.id AS id, c.name AS name, c.description AS description, c.reference_path AS reference_path,
       c.decay_tau AS decay_tau, a.strength AS strength
ORDER BY id
