UNWIND $rows AS r
CREATE (:Scene {story_id: $story, id: r.id, status: 'planned', takes: 0, notes: '', created_at: $now,
    stale_reason: '', stale_from: '',
    title: r.title, action: r.action, characters: r.characters, environment: r.environment,
    lighting: r.lighting, weather: r.weather, camera: r.camera, width: r.width, height: r.height,
    frames: r.frames, fps: r.fps, seed: r.seed, steps: r.steps, guidance: r.guidance,
    negative_prompt: r.negative_prompt, refs: r.refs, memory: r.memory, clock: r.clock, branch: r.branch, pos: r.pos,
    parent_id: r.parent_id})
