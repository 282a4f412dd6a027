MATCH (e:Environment {story_id: $story})
RETURN e.id AS id, e.name AS name, e.description AS description, e.reference_path AS reference_path,
       e.reference_sha AS reference_sha
ORDER BY id
