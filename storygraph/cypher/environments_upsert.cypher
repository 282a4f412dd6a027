UNWIND $rows AS r
MATCH (e:Environment {story_id: $story, id: r.id})
SET e.name = r.name, e.description = r.description, e.reference_path = r.reference_path, e.reference_sha = r.reference_sha
