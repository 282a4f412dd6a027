MATCH (s:Story)
RETURN s.id AS id, s.title AS title, s.source_path AS source_path, s.defaults AS defaults, s.created_at AS created_at,
       s.memory_index AS memory_index
ORDER BY id
