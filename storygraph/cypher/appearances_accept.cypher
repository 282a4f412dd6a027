MATCH (a:Appearance)-[:`IN`]->(s:Scene {story_id: $story, id: $scene})
SET a.accepted = (a.take = $take)
