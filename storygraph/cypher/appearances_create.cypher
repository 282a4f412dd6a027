UNWIND $rows AS r
MATCH (c:Character {story_id: $story, id: r.character_id})
MATCH (s:Scene {story_id: $story, id: r.scene_id})
CREATE (a:Appearance {story_id: $story, id: r.id, character_id: r.character_id, scene_id: r.scene_id,
        take: r.take, frame_index: r.frame_index, frame_path: r.frame_path, strength: r.strength,
        reinforced_clock: r.reinforced_clock, identity_score: r.identity_score, clock: r.clock,
        branch: r.branch, pos: r.pos, accepted: false, clip: r.clip, dino: r.dino, uses: r.uses})
CREATE (a)-[:OF]->(c)
CREATE (a)-[:`IN`]->(s)
