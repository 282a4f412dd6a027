UNWIND $ids AS sid
MATCH (s:Scene {story_id: $story, id: sid})
DETACH DELETE s
