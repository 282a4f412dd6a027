UNWIND $ids AS cid
MATCH (c:Character {story_id: $story, id: cid})
RETURN c.id AS id, c.name AS name, c.description AS description, c.reference_path AS reference_path,
       c.decay_tau AS decay_tau, c.reference_sha AS reference_sha
ORDER BY id
