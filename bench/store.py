"""Graph query costs as a story grows; prints one JSON object.

1. Per-scene context: 100 scenes against N scenes (default 100 000). Builds a synthetic story with bulk COPY
   (1 000 characters, 10 planned appearances per scene, an alternative branch off the main timeline every 50
   scenes), then times ``store.scene_context`` — the read the engine runs before every scene — on random scenes.
2. Staleness: 100 scenes against S generated scenes (default 10 000), each with a chosen take, 10 appearances and
   the provenance of a generated story (a continuous scene extends its parent; a cut or time skip remembers two
   appearances of its parent and two of its grandparent). ``stale_query_ms`` times what an edit of one scene runs
   before writing: the ``stale_dependencies`` query (every generated scene from the edited one's clock on, with
   what its take was made from) and the walk over its rows that finds the stale set, for random edited scenes;
   ``mark_stale_first_ms`` is a whole edit of the first scene (query, walk, marking every scene made from it
   stale, one Event each) on the large story.

    python bench/store.py [--scenes N] [--queries Q] [--stale-scenes S] [--stale-queries Q2]
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
from storygraph.ripple import Cause, dependents_from_rows, stale_marks  # noqa: E402
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


def build_generated(folder: Path, scenes: int, seed: int = 0) -> tuple[EmbeddedStore, list[str]]:
    """The synthetic story of :func:`build`, generated: every scene done with take 0 chosen, its appearances, and
    its provenance (``CONDITIONED_ON`` of take 0)."""
    store, _, ids = build(folder, scenes, seed)
    rng = random.Random(seed + 1)
    rows = store.query("MATCH (s:Scene) RETURN s.id, s.characters, s.clock, s.branch, s.pos, s.parent_id",
                       {}, max_rows=scenes + 1).rows
    by = {r[0]: r for r in rows}
    store._write_query("MATCH (s:Scene) SET s.status = 'done', s.chosen_take = 0, s.takes = 1, s.stale_reason = ''",
                       {})
    app = {"id": [], "story_id": [], "character_id": [], "scene_id": [], "take": [], "frame_index": [],
           "frame_path": [], "strength": [], "reinforced_clock": [], "identity_score": [], "clock": [], "branch": [],
           "pos": [], "accepted": []}
    for sid, cast, clock, branch, pos, _ in rows:
        for c in cast:
            for k, v in (("id", f"{sid}:t0:{c}"), ("story_id", "bench"), ("character_id", c), ("scene_id", sid),
                         ("take", 0), ("frame_index", 4), ("frame_path", f"media/{sid}/take-0/frame_0004.png"),
                         ("strength", 0.9), ("reinforced_clock", clock), ("identity_score", 0.9), ("clock", clock),
                         ("branch", branch), ("pos", pos), ("accepted", True)):
                app[k].append(v)
    store.bulk_copy("Appearance", app)
    kinds = {t.to_id: t.kind for t in synthetic_transitions(ids)}
    ext, keys = {"from": [], "to": []}, {"from": [], "to": []}
    for sid, cast, _, _, _, parent in rows:
        if parent is None:
            continue
        if kinds[sid] == "continuous":
            ext["from"].append(sid)
            ext["to"].append(parent)
            continue
        grand = by[parent][5]
        for src in [parent] * 2 + ([grand] * 2 if grand else []):
            keys["from"].append(sid)
            keys["to"].append(f"{src}:t0:{rng.choice(by[src][1])}")
    for target, cols, role in (("Scene", ext, "extension"), ("Appearance", keys, "keyframe")):
        n = len(cols["from"])
        store.bulk_copy("CONDITIONED_ON", {**cols, "take": [0] * n, "role": [role] * n, "frame_index": [0] * n,
                                           "strength": [1.0] * n, "reason": [""] * n}, target=target)
    return store, ids


def time_stale(store: EmbeddedStore, ids: list[str], queries: int, seed: int = 2) -> tuple[list[float], list[int]]:
    """Milliseconds of the stale-set search for random edited scenes, and how many scenes each found."""
    rng = random.Random(seed)
    clocks = {r[0]: r[1] for r in store.query("MATCH (s:Scene) RETURN s.id, s.clock", {}, max_rows=len(ids) + 1).rows}
    out, found = [], []
    for i in range(queries + 3):  # the first three warm caches
        sid = rng.choice(ids)
        t = time.perf_counter()
        rows = store.stale_dependencies(from_clock=clocks[sid])
        marks = stale_marks(dependents_from_rows(rows), changed={sid: Cause(sid, "edited: lighting")})
        if i >= 3:
            out.append((time.perf_counter() - t) * 1000)
            found.append(len(marks))
    return out, found


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--stale-scenes", type=int, default=10_000)
    ap.add_argument("--stale-queries", type=int, default=30)
    ap.add_argument("--skip-context", action="store_true", help="time the staleness search only")
    args = ap.parse_args()
    out = {} if args.skip_context else context_bench(args)
    out.update(stale_bench(args))
    print(json.dumps(out))


def stale_bench(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        small, small_ids = build_generated(Path(tmp) / "small", 100)
        small_t, _ = time_stale(small, small_ids, args.stale_queries)
        small.close()
        large, large_ids = build_generated(Path(tmp) / "large", args.stale_scenes)
        large_t, found = time_stale(large, large_ids, args.stale_queries)
        t = time.perf_counter()
        marked = large.mark_stale({large_ids[0]: Cause(large_ids[0], "edited: lighting")})
        first_ms = (time.perf_counter() - t) * 1000
        large.close()
    small_ms, large_ms = round(statistics.median(small_t), 2), round(statistics.median(large_t), 2)
    return {
        "stale_query_ms": {"100": small_ms, str(args.stale_scenes): large_ms},
        "stale_query_p99_ms": {"100": round(pct(small_t, 0.99), 2), str(args.stale_scenes): round(pct(large_t, 0.99), 2)},
        "stale_ratio": round(large_ms / small_ms, 2), "stale_found_mean": round(statistics.mean(found), 1),
        "mark_stale_first_ms": round(first_ms, 1), "mark_stale_first_marked": len(marked),
    }


def context_bench(args) -> dict:
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
    return out


if __name__ == "__main__":
    main()
