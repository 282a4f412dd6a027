"""Per-scene context query cost as a story grows: 100 scenes against N scenes (default 100 000).

Builds a synthetic story with bulk COPY (1 000 characters, 10 planned appearances per scene, an alternative
branch off the main timeline every 50 scenes), then times ``store.scene_context`` — the read the engine runs
before every scene — on random scenes. Prints one JSON object.

    python bench/store.py [--scenes N] [--queries Q]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storygraph.domain import Story, Transition  # noqa: E402
from storygraph.graphdb.embedded import EmbeddedStore  # noqa: E402
from storygraph.timeline import place_scenes, transition_decay  # noqa: E402

CHARACTERS = 1000
ENVIRONMENTS = 100
PER_SCENE = 10


def synthetic_transitions(ids: list[str]) -> list[Transition]:
    """A main timeline through ``ids`` with every 50th scene an alternative branching off 25 scenes back."""
    kinds = ("continuous", "cut", "time_skip")
    transitions, main = [], [ids[0]]
    for i in range(1, len(ids)):
        if i % 50 == 0 and len(main) > 25:
            transitions.append(Transition(main[-25], ids[i], kinds[i % 3]))
        else:
            transitions.append(Transition(main[-1], ids[i], kinds[i % 3]))
            main.append(ids[i])
    return transitions


def build(folder: Path, scenes: int, seed: int = 0) -> tuple[EmbeddedStore, float, list[str]]:
    rng = random.Random(seed)
    store = EmbeddedStore(folder, story_id="bench")
    store.load_story(Story("bench", "synthetic"))
    t0 = time.perf_counter()
    ids = [f"s{i:07d}" for i in range(scenes)]
    transitions = synthetic_transitions(ids)
    placements = place_scenes(ids, transitions)
    chars = [f"c{j:04d}" for j in range(CHARACTERS)]
    envs = [f"e{j:03d}" for j in range(ENVIRONMENTS)]
    cast = [rng.sample(chars, PER_SCENE) for _ in ids]
    env_of = [rng.choice(envs) for _ in ids]
    store.bulk_copy("Character", {"id": chars, "story_id": ["bench"] * CHARACTERS, "name": chars,
                                  "description": ["synthetic"] * CHARACTERS})
    store.bulk_copy("Environment", {"id": envs, "story_id": ["bench"] * ENVIRONMENTS, "description": envs,
                                    "name": envs})
    p = [placements[s] for s in ids]
    store.bulk_copy("Scene", {
        "id": ids, "story_id": ["bench"] * scenes, "title": ids, "action": ["walks"] * scenes, "characters": cast,
        "environment": env_of, "width": [768] * scenes, "height": [512] * scenes, "frames": [121] * scenes,
        "fps": [24.0] * scenes, "seed": list(range(scenes)), "steps": [8] * scenes, "guidance": [1.0] * scenes,
        "refs": ["[]"] * scenes, "clock": [x.clock for x in p], "branch": [x.branch for x in p],
        "pos": [x.pos for x in p], "parent_id": [x.parent_id for x in p],
        "status": ["planned"] * scenes,
        "takes": [0] * scenes, "notes": [""] * scenes})
    store.bulk_copy("HAS_SCENE", {"from": ["bench"] * scenes, "to": ids})
    store.bulk_copy("SET_IN", {"from": ids, "to": env_of})
    store.bulk_copy("NEXT", {"from": [t.from_id for t in transitions], "to": [t.to_id for t in transitions],
                             "kind": [t.kind for t in transitions], "gap": [t.effective_gap for t in transitions],
                             "decay": [transition_decay(t.effective_gap, 10.0) for t in transitions]})
    store.bulk_copy("APPEARS_IN", {"from": [c for cs in cast for c in cs],
                                   "to": [s for s in ids for _ in range(PER_SCENE)],
                                   "strength": [1.0] * (scenes * PER_SCENE),
                                   "last_seen_clock": [placements[s].clock for s in ids for _ in range(PER_SCENE)]})
    return store, time.perf_counter() - t0, ids


def time_context(store: EmbeddedStore, ids: list[str], queries: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    for sid in rng.sample(ids, min(50, len(ids))):  # warm caches and prepared statements
        store.scene_context(sid)
    out = []
    for _ in range(queries):
        sid = rng.choice(ids)
        t = time.perf_counter()
        ctx = store.scene_context(sid)
        out.append((time.perf_counter() - t) * 1000)
        assert ctx.scene.id == sid and len(ctx.characters) == PER_SCENE
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, _, small_ids = build(Path(tmp) / "small", 100)
        small_t = time_context(small, small_ids, args.queries)
        small.close()
        large, load_s, large_ids = build(Path(tmp) / "large", args.scenes)
        large_t = time_context(large, large_ids, args.queries)
        large.close()
    out = {
        "scenes": args.scenes, "characters": CHARACTERS, "planned_appearances": args.scenes * PER_SCENE,
        "load_s": round(load_s, 2),
        "context_p50_ms_small": round(statistics.median(small_t), 3),
        "context_p99_ms_small": round(pct(small_t, 0.99), 3),
        "context_p50_ms_large": round(statistics.median(large_t), 3),
        "context_p99_ms_large": round(pct(large_t, 0.99), 3),
    }
    out["ratio_p50"] = round(out["context_p50_ms_large"] / out["context_p50_ms_small"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
