UNWIND $ids AS sid
MATCH (a:Appearance)-[:`IN`]->(s:Scene {story_id: $story, id: sid})
DETACH DELETE a
