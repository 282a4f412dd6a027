UNWIND $rows AS r
CREATE (:Environment {story_id: $story, id: r.id, name: r.name, description: r.description,
    reference_path: r.reference_path, reference_sha: r.reference_sha})
