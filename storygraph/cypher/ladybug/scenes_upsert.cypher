UNWIND $rows AS r
MERGE (s:Scene {story_id: $story, id: r.id})
ON CREATE SET s.status = 'planned', s.takes = 0, s.notes = '', s.created_at = $now, s.stale_reason = '',
    s.stale_from = ''
SET s.title = r.title, s.action = r.action, s.characters = r.characters, s.environment = r.environment,
    s.lighting = r.lighting, s.weather = r.weather, s.camera = r.camera, s.width = r.width, s.height = r.height,
    s.frames = r.frames, s.fps = r.fps, s.seed = r.seed, s.steps = r.steps, s.guidance = r.guidance,
    s.negative_prompt = r.negative_prompt, s.refs = r.refs, s.memory = r.memory, s.clock = r.clock, s.branch = r.branch, s.pos = r.pos,
    s.parent_id = r.parent_id, s.lineage_branches = r.lineage_branches, s.lineage_upto = CAST(r.lineage_upto AS INT64[])
