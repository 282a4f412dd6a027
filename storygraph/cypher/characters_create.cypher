UNWIND $rows AS r
CREATE (:Character {story_id: $story, id: r.id, name: r.name, description: r.description,
    reference_path: r.reference_path, decay_tau: r.decay_tau, reference_sha: r.reference_sha})
