MERGE (s:Story {id: $story})
ON CREATE SET s.story_id = $story, s.created_at = $now, s.memory_index = 1
SET s.title = $title, s.source_path = $source_path, s.defaults = $defaults
RETURN s.id AS id
