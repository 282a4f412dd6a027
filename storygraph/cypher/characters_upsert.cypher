UNWIND $rows AS r
MATCH (c:Character {story_id: $story, id: r.id})
SET c.name = r.name, c.description = r.description, c.reference_path = r.reference_path, c.decay_tau = r.decay_tau,
    c.reference_sha = r.reference_sha
