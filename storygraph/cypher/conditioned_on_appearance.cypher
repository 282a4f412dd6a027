UNWIND $rows AS r
MATCH (s:Scene {story_id: $story, id: $scene})
MATCH (a:Appearance {story_id: $story, id: r.target_id})
CREATE (s)-[:CONDITIONED_ON {take: $take, role: r.role, frame_index: r.frame_index, strength: r.strength,
        score: r.score, reason: r.reason, mode: r.mode}]->(a)
