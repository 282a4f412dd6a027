UNWIND $rows AS r
MATCH (a:Appearance)-[:`IN`]->(s:Scene {story_id: $story, id: r.id})
SET a.clock = r.clock, a.branch = r.branch, a.pos = r.pos
