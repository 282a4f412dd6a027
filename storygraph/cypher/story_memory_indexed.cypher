MATCH (s:Story {id: $story})
SET s.memory_index = $version
