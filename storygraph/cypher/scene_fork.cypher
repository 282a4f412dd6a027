MATCH (p:Scene)-[:NEXT]->(f:Scene {story_id: $story, id: $branch})
RETURN p.branch AS branch, p.pos AS pos
