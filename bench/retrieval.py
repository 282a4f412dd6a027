"""Story memory at scale: one full retrieval (vector candidates + graph context + memory score); prints one JSON object.

    python bench/retrieval.py [--appearances N] [--device cpu|cuda] [--queries Q] [--graph-vectors all|sample]

The story is synthetic: ``--characters`` (1 000) characters whose screen time follows a Zipf law (s = 1: the
lead has ~13 % of all appearances, so the main characters go through the approximate index), ~3.3 characters per
scene, one accepted appearance per character and scene, and a branching timeline (a trunk holding a third of the
scenes, one branch per 500 scenes forking from a random earlier scene, nesting freely). Embeddings are planted,
768-d each: CLIP = character + environment + action + outfit + lighting + pose + noise; DINOv2 = identity + outfit
+ pose + noise, with 3 % of appearances off-model. Planted structure stands in for real embeddings; it proves
speed and the approximate index's recall on clustered data, nothing about visual quality.

Keys:
- ``p50_ms``/``p99_ms``: ``Retriever.nearest_prior_appearances`` (k=4, 64 candidates per space) on random
  (scene, character) pairs drawn in proportion to screen time, half with a reference embedding and half falling
  back to the first appearance on the timeline; ``graph_share_*`` is the graph read inside it and
  ``without_graph_*`` the rest (vector search, drift guard, scoring); ``graph_context_*_ms`` times that read
  alone for ~130 candidate ids, and ``graph_context_p50_ms_vector_graph`` the same on a graph that stores vectors;
- ``recall_at_10``: approximate vs exact top-10 of the timeline-restricted vector search, both spaces, over
  ``recall_at_10_searches`` searches that take the approximate path (characters with a PQ index, timelines
  leaving more than ``exact_allowed`` rows; ``approx_search_p50_ms`` times them); ``recall_at_10_all`` over the
  latency queries (most are exact: the timeline leaves few rows); ``retrieval_agreement_at_4``: overlap of the
  final ranked answers with approximate and with exact search;
- ``build_s``: building both indexes from arrays; ``save_s``/``open_s``: writing them to disk and reopening;
- ``reconcile_s``: rebuilding lost indexes from the graph. Loading 768-d vectors into LadybugDB with COPY runs at
  ~2-3 k appearances/s on 2 cores, so by default (``--graph-vectors sample`` above 200 k appearances) the main
  graph holds every appearance without vectors and a second graph holds the first ``--sample`` appearances with
  vectors; ``reconcile_s`` is then measured on that sample (``reconcile_rows``) and ``reconcile_s_per_1m``
  extrapolates linearly. ``--graph-vectors all`` loads every vector into the main graph and reconciles it all.
- ``graph_load_s`` (structure + appearance rows), ``graph_vector_copy_s`` (COPY of the rows that carry vectors),
  ``rss_mb`` (peak resident memory of the process).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storygraph.domain import MemoryParams, Story, Transition  # noqa: E402
from storygraph.engine.retrieval import Retriever  # noqa: E402
from storygraph.engine.vectors import VectorIndex, reconcile_all  # noqa: E402
from storygraph.timeline import place_scenes, transition_decay  # noqa: E402

ENVIRONMENTS, ACTIONS, OUTFITS, LIGHTS, POSE = 500, 200, 8, 20, 16
STORY = "bench"


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


# -- the synthetic story -------------------------------------------------------------------------------
class World:
    def __init__(self, appearances: int, characters: int, dim: int, zipf: float, seed: int):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.dim = dim
        self.characters = [f"c{j:04d}" for j in range(characters)]
        weights = 1.0 / np.arange(1, characters + 1) ** zipf
        weights /= weights.sum()

        # scenes and casts: 1 + Binomial(5, 0.46) characters each, drawn by screen time
        scenes = int(appearances / 3.0) + 16
        while True:
            sizes = 1 + rng.binomial(5, 0.46, scenes)
            draws = rng.choice(characters, size=int(sizes.sum()), p=weights)
            scene_of = np.repeat(np.arange(scenes), sizes)
            pairs = np.unique(scene_of.astype(np.int64) * characters + draws)  # dedupe (scene, character)
            if len(pairs) >= appearances:
                break
            scenes = int(scenes * 1.2) + 16  # few characters: many repeats within a cast
        pairs = pairs[:appearances]
        a_scene = (pairs // characters).astype(np.int64)
        a_char = (pairs % characters).astype(np.int64)
        scenes = int(a_scene.max()) + 1

        # timeline: a trunk of a third of the scenes, one branch per 500 scenes forking anywhere earlier
        self.scene_ids = [f"s{i:07d}" for i in range(scenes)]
        n_branches = max(1, scenes // 500)
        trunk = max(1, scenes // 3)
        cuts = np.sort(rng.choice(np.arange(trunk + 1, scenes), size=min(n_branches, scenes - trunk - 1),
                                  replace=False)) if scenes - trunk > 1 else np.array([], np.int64)
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        ends = np.concatenate([cuts, [scenes]]).astype(np.int64)
        kinds = rng.choice(["continuous", "cut", "time_skip"], size=scenes, p=[0.4, 0.5, 0.1])
        cont, forks = [], []
        for b, (s, e) in enumerate(zip(starts, ends)):
            for i in range(s + 1, e):
                cont.append(Transition(self.scene_ids[i - 1], self.scene_ids[i], str(kinds[i])))
            if b > 0:
                forks.append(Transition(self.scene_ids[int(rng.integers(0, s))], self.scene_ids[s], str(kinds[s])))
        self.transitions = cont + forks  # continuing transitions first: they keep their parent's branch
        self.placements = place_scenes(self.scene_ids, self.transitions)
        self.depth = max(len(p.lineage) for p in self.placements.values())

        # scene content
        self.scene_env = rng.integers(0, ENVIRONMENTS, scenes)
        self.scene_act = rng.integers(0, ACTIONS, scenes)
        self.scene_light = rng.integers(0, LIGHTS, scenes)

        # appearances ordered by character, then timeline (keeps each character's rows contiguous)
        order = np.lexsort((a_scene, a_char))
        self.a_scene, self.a_char = a_scene[order], a_char[order]
        self.n = appearances
        self.ids = [f"a{i:08d}" for i in range(appearances)]
        self.outfit = rng.integers(0, OUTFITS, appearances)
        self.off_model = rng.random(appearances) < 0.03
        pl = [self.placements[self.scene_ids[s]] for s in range(scenes)]
        self.scene_clock = np.array([p.clock for p in pl])
        self.scene_branch = [p.branch for p in pl]
        self.scene_pos = np.array([p.pos for p in pl])
        self.clock = self.scene_clock[self.a_scene]
        self.pos = self.scene_pos[self.a_scene]
        self.branch = [self.scene_branch[s] for s in self.a_scene]
        bounds = np.flatnonzero(np.diff(self.a_char)) + 1
        self.char_start = np.concatenate([[0], bounds])
        self.char_end = np.concatenate([bounds, [appearances]])

        # planted directions
        g = lambda *shape: unit_rows(rng.standard_normal(shape, dtype=np.float32))  # noqa: E731
        self.c_clip, self.c_dino = g(characters, dim), g(characters, dim)
        self.env, self.act, self.light = g(ENVIRONMENTS, dim), g(ACTIONS, dim), g(LIGHTS, dim)
        self.out_clip, self.out_dino = g(characters * OUTFITS, dim), g(characters * OUTFITS, dim)
        self.pose_clip, self.pose_dino = g(POSE, dim), g(POSE, dim)
        self.impostor = g(64, dim)

    def reference(self, c: int) -> np.ndarray:
        return unit_rows(self.c_dino[c] + 0.5 * self.out_dino[c * OUTFITS])

    def text_query(self, c: int, scene: int, rng) -> np.ndarray:
        q = (0.5 * self.c_clip[c] + self.env[self.scene_env[scene]] + 0.6 * self.act[self.scene_act[scene]]
             + 0.3 * unit_rows(rng.standard_normal(self.dim).astype(np.float32)))
        return unit_rows(q)

    def embed(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """CLIP and DINOv2 vectors of appearances [lo, hi), L2-normalised float32."""
        rng = np.random.default_rng(lo)
        m, d = hi - lo, self.dim
        c, s = self.a_char[lo:hi], self.a_scene[lo:hi]
        o = c * OUTFITS + self.outfit[lo:hi]
        pose = rng.standard_normal((m, POSE), dtype=np.float32) * 0.3
        clip = rng.standard_normal((m, d), dtype=np.float32)
        clip *= 0.35 / math.sqrt(d)  # isotropic noise of norm ~0.35
        clip += self.c_clip[c]
        for table, scale, rows in ((self.env, 0.8, self.scene_env[s]), (self.act, 0.5, self.scene_act[s]),
                                   (self.out_clip, 0.6, o), (self.light, 0.3, self.scene_light[s])):
            clip += scale * table[rows]
        clip += pose @ self.pose_clip
        dino = rng.standard_normal((m, d), dtype=np.float32)
        dino *= 0.25 / math.sqrt(d)
        dino += self.c_dino[c]
        off = np.flatnonzero(self.off_model[lo:hi])
        if len(off):  # off-model: somebody else in the outfit, a weak trace of the identity
            dino[off] += -0.7 * self.c_dino[c[off]] + self.impostor[rng.integers(0, 64, len(off))]
        dino += 0.5 * self.out_dino[o]
        dino += pose @ self.pose_dino
        return unit_rows(clip), unit_rows(dino)

    def chunks(self, size: int):
        """[lo, hi) ranges of whole characters, at least ``size`` rows each (but the last)."""
        first = 0
        for j in range(len(self.char_start)):
            if self.char_end[j] - self.char_start[first] >= size or j == len(self.char_start) - 1:
                yield int(self.char_start[first]), int(self.char_end[j])
                first = j + 1


# -- the graph -----------------------------------------------------------------------------------------
def open_store(folder: Path):
    from storygraph.graphdb.embedded import EmbeddedStore

    store = EmbeddedStore(folder, story_id=STORY)
    store.load_story(Story(STORY, "synthetic"))
    return store


def load_structure(store, w: World) -> None:
    n = len(w.scene_ids)
    store.bulk_copy("Character", {"id": w.characters, "story_id": [STORY] * len(w.characters), "name": w.characters,
                                  "description": ["synthetic"] * len(w.characters)})
    envs = [f"e{j:03d}" for j in range(ENVIRONMENTS)]
    store.bulk_copy("Environment", {"id": envs, "story_id": [STORY] * ENVIRONMENTS, "description": envs,
                                    "name": envs})
    p = [w.placements[s] for s in w.scene_ids]
    env_of = [envs[e] for e in w.scene_env]
    store.bulk_copy("Scene", {
        "id": w.scene_ids, "story_id": [STORY] * n, "title": w.scene_ids, "action": ["acts"] * n,
        "environment": env_of, "refs": ["[]"] * n, "clock": [x.clock for x in p], "branch": [x.branch for x in p],
        "pos": [x.pos for x in p], "parent_id": [x.parent_id for x in p],
        "status": ["done"] * n, "takes": [1] * n,
        "notes": [""] * n})
    store.bulk_copy("HAS_SCENE", {"from": [STORY] * n, "to": w.scene_ids})
    store.bulk_copy("SET_IN", {"from": w.scene_ids, "to": env_of})
    t = w.transitions
    store.bulk_copy("NEXT", {"from": [x.from_id for x in t], "to": [x.to_id for x in t], "kind": [x.kind for x in t],
                             "gap": [x.effective_gap for x in t],
                             "decay": [transition_decay(x.effective_gap, MemoryParams().tau_story) for x in t]})


def memory_fields(w: World, lo: int, hi: int, dino: np.ndarray) -> dict:
    """Strength, reinforced clock and identity score as the observer and reinforcement would have left them."""
    p = MemoryParams()
    refs = unit_rows(w.c_dino[w.a_char[lo:hi]] + 0.5 * w.out_dino[w.a_char[lo:hi] * OUTFITS])
    identity = np.einsum("ij,ij->i", dino, refs)
    rng = np.random.default_rng(hi)
    strength = np.clip(p.strength_init * identity + rng.integers(0, 3, hi - lo) * p.reinforce_step,
                       p.strength_min, p.strength_max)
    reinforced = w.clock[lo:hi] + rng.integers(0, 2, hi - lo) * rng.exponential(5.0, hi - lo)
    return {"strength": strength, "reinforced_clock": reinforced, "identity_score": identity.astype(np.float64)}


def load_appearances(store, w: World, lo: int, hi: int, clip=None, dino=None, fields=None) -> None:
    import pyarrow as pa

    m = hi - lo
    ids = w.ids[lo:hi]
    chars = [w.characters[c] for c in w.a_char[lo:hi]]
    scenes = [w.scene_ids[s] for s in w.a_scene[lo:hi]]
    cols = {"id": ids, "story_id": [STORY] * m, "character_id": chars, "scene_id": scenes, "take": np.zeros(m, np.int64),
            "frame_index": np.zeros(m, np.int64), "frame_path": [f"/media/{s}/take-0/frame.png" for s in scenes],
            "clock": w.clock[lo:hi], "branch": w.branch[lo:hi], "pos": w.pos[lo:hi].astype(np.int64),
            "accepted": np.ones(m, bool), **fields}
    if clip is not None:
        offsets = pa.array(np.arange(0, m * w.dim + 1, w.dim, dtype=np.int32))
        cols["clip"] = pa.ListArray.from_arrays(offsets, pa.array(clip.ravel()))
        cols["dino"] = pa.ListArray.from_arrays(offsets, pa.array(dino.ravel()))
    store.bulk_copy("Appearance", cols)
    store.bulk_copy("OF", {"from": ids, "to": chars})
    store.bulk_copy("IN", {"from": ids, "to": scenes})


# -- measuring -----------------------------------------------------------------------------------------
T0 = time.perf_counter()


def progress(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def rss_now_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appearances", type=int, default=1_000_000)
    ap.add_argument("--characters", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--graph-vectors", choices=["all", "sample"], default=None,
                    help="load every vector into the graph, or only a sample (default: all up to 200 k appearances)")
    ap.add_argument("--sample", type=int, default=100_000, help="appearances with vectors in the sample graph")
    ap.add_argument("--exact-threshold", type=int, default=4096, help="partitions up to this size are searched exactly")
    ap.add_argument("--exact-allowed", type=int, default=4096,
                    help="exact search too when the timeline leaves at most this many rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    graph_vectors = args.graph_vectors or ("all" if args.appearances <= 200_000 else "sample")
    out: dict = {"appearances": args.appearances, "device": args.device, "dim": args.dim,
                 "characters": args.characters, "graph_vectors": graph_vectors}
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        tmp = Path(tmp)
        run(args, graph_vectors, tmp, out)
    out["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def run(args, graph_vectors: str, tmp: Path, out: dict) -> None:
    t = time.perf_counter()
    w = World(args.appearances, args.characters, args.dim, args.zipf, args.seed)
    out["scenes"] = len(w.scene_ids)
    out["branches"] = len(set(w.scene_branch))
    out["branch_depth_max"] = w.depth
    out["largest_character"] = int((w.char_end - w.char_start).max())
    out["story_s"] = round(time.perf_counter() - t, 2)
    progress(f"story: {len(w.scene_ids)} scenes, {out['branches']} branches, depth {w.depth}")

    store = open_store(tmp / "story")
    t = time.perf_counter()
    load_structure(store, w)
    graph_s, vector_copy_s, embed_s, build_s = time.perf_counter() - t, 0.0, 0.0, 0.0
    progress(f"graph structure loaded in {graph_s:.1f} s")
    tuning = {"exact_threshold": args.exact_threshold, "exact_allowed": args.exact_allowed}
    idx = {s: VectorIndex(s, folder=tmp / "story" / "vectors", device=args.device, **tuning) for s in ("clip", "dino")}
    for lo, hi in w.chunks(100_000):
        t = time.perf_counter()
        clip, dino = w.embed(lo, hi)
        fields = memory_fields(w, lo, hi, dino)
        embed_s += time.perf_counter() - t
        t = time.perf_counter()
        if graph_vectors == "all":
            load_appearances(store, w, lo, hi, clip, dino, fields)
            vector_copy_s += time.perf_counter() - t
        else:
            load_appearances(store, w, lo, hi, fields=fields)
            graph_s += time.perf_counter() - t
        t = time.perf_counter()
        for space, vecs in (("clip", clip), ("dino", dino)):
            idx[space].add_arrays(w.ids[lo:hi], [w.characters[c] for c in w.a_char[lo:hi]], vecs, w.branch[lo:hi],
                                  w.pos[lo:hi], w.clock[lo:hi], normalised=True)
        build_s += time.perf_counter() - t
        del clip, dino
        progress(f"appearances {hi}/{w.n}: embed {embed_s:.1f} s, graph {graph_s + vector_copy_s:.1f} s, "
                 f"index {build_s:.1f} s, rss {rss_now_mb():.0f} MB")
    out.update(graph_load_s=round(graph_s, 2), graph_vector_copy_s=round(vector_copy_s, 2),
               embed_s=round(embed_s, 2), build_s=round(build_s, 2), rss_after_build_mb=round(rss_now_mb(), 1))
    st = idx["clip"].stats()
    out["approximate_characters"] = st["approximate_partitions"]
    out["approximate_rows_per_space"] = st["approximate_rows"]

    params = MemoryParams()
    retriever = Retriever(store, idx["clip"], idx["dino"], params)
    rng = np.random.default_rng(args.seed + 1)
    rows = rng.integers(0, w.n, args.queries + 20)
    queries = []
    for i, r in enumerate(rows):
        c, s = int(w.a_char[r]), int(w.a_scene[r])
        placement = w.placements[w.scene_ids[s]]
        queries.append((w.characters[c], placement, w.text_query(c, s, rng), w.reference(c) if i % 2 else None, c))

    # latency of one full retrieval
    for cid, pl, tq, ref, _ in queries[:20]:
        retriever.nearest_prior_appearances(pl, cid, 4, text_query=tq, identity_ref=ref)
    lat, sizes, in_graph = [], [], []
    graph_read = store.appearances
    spent = [0.0]

    def timed_read(*a, **kw):  # the graph's share of each retrieval
        t0 = time.perf_counter()
        try:
            return graph_read(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t0

    store.appearances = timed_read
    for cid, pl, tq, ref, _ in queries[20:]:
        spent[0] = 0.0
        t = time.perf_counter()
        got = retriever.nearest_prior_appearances(pl, cid, 4, text_query=tq, identity_ref=ref)
        lat.append((time.perf_counter() - t) * 1000)
        in_graph.append(spent[0] * 1000)
        sizes.append(len(got))
    del store.appearances
    rest = [a - b for a, b in zip(lat, in_graph)]
    out.update(p50_ms=round(statistics.median(lat), 3), p99_ms=round(pct(lat, 0.99), 3),
               mean_ms=round(statistics.fmean(lat), 3), answered=round(float(np.mean([s > 0 for s in sizes])), 3),
               graph_share_p50_ms=round(statistics.median(in_graph), 3), graph_share_p99_ms=round(pct(in_graph, 0.99), 3),
               without_graph_p50_ms=round(statistics.median(rest), 3), without_graph_p99_ms=round(pct(rest, 0.99), 3))

    progress(f"retrieval p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms")
    # the graph read inside it
    ctx = []
    for cid, pl, tq, ref, c in queries[20:220]:
        ids = list(dict.fromkeys(idx["dino"].search(cid, w.reference(c), params.candidates, pl)[0]
                                 + idx["clip"].search(cid, tq, params.candidates, pl)[0]))
        t = time.perf_counter()
        store.appearances(ids=ids, with_vectors=False)
        ctx.append((time.perf_counter() - t) * 1000)
    out["graph_context_p50_ms"] = round(statistics.median(ctx), 3)
    out["graph_context_p99_ms"] = round(pct(ctx, 0.99), 3)

    # recall of the approximate path: queries drawn from the characters large enough to have one, kept when
    # the timeline leaves enough rows for the approximate path to be taken; plus agreement of final answers
    approx_chars = [c for c in range(len(w.characters))
                    if getattr(idx["clip"]._parts.get(w.characters[c]), "pq", None) is not None]
    rec_approx, searched = [], []
    if approx_chars:
        lo_hi = [(int(w.char_start[c]), int(w.char_end[c])) for c in approx_chars]
        tries = 0
        while len(rec_approx) < 2 * args.recall_queries and tries < 20 * args.recall_queries:
            tries += 1
            lo, hi = lo_hi[int(rng.integers(0, len(lo_hi)))]
            r = int(rng.integers(lo, hi))
            c, s = int(w.a_char[r]), int(w.a_scene[r])
            cid, pl = w.characters[c], w.placements[w.scene_ids[s]]
            for space, q in (("clip", w.text_query(c, s, rng)), ("dino", w.reference(c))):
                if len(idx[space].allowed(cid, pl)) <= idx[space].exact_allowed:
                    continue
                t = time.perf_counter()
                a, _ = idx[space].search(cid, q, 10, pl)
                searched.append((time.perf_counter() - t) * 1000)
                e, _ = idx[space].search(cid, q, 10, pl, exact=True)
                rec_approx.append(len(set(a) & set(e)) / len(e))
    rec_all, agree = [], []
    for cid, pl, tq, ref, c in queries[20: 20 + args.recall_queries]:
        for space, q in (("clip", tq), ("dino", w.reference(c))):
            a, _ = idx[space].search(cid, q, 10, pl)
            e, _ = idx[space].search(cid, q, 10, pl, exact=True)
            if e:
                rec_all.append(len(set(a) & set(e)) / len(e))
        ga = [x.appearance.id for x in retriever.nearest_prior_appearances(pl, cid, 4, text_query=tq, identity_ref=ref)]
        ge = [x.appearance.id for x in retriever.nearest_prior_appearances(pl, cid, 4, text_query=tq, identity_ref=ref,
                                                                           exact=True)]
        if ge:
            agree.append(len(set(ga) & set(ge)) / len(ge))
    out["recall_at_10"] = round(float(np.mean(rec_approx)), 4) if rec_approx else None
    out["recall_at_10_searches"] = len(rec_approx)
    out["recall_at_10_all"] = round(float(np.mean(rec_all)), 4) if rec_all else None
    out["retrieval_agreement_at_4"] = round(float(np.mean(agree)), 4) if agree else None
    if searched:
        out["approx_search_p50_ms"] = round(statistics.median(searched), 3)
        out["approx_search_p99_ms"] = round(pct(searched, 0.99), 3)
    progress(f"recall {out['recall_at_10']} over {len(rec_approx)} approximate searches")
    # persistence: write and reopen (no graph involved)
    t = time.perf_counter()
    for x in idx.values():
        x.save()
    out["save_s"] = round(time.perf_counter() - t, 2)
    del retriever
    idx.clear()
    gc.collect()
    t = time.perf_counter()
    reopened = {s: VectorIndex.open(tmp / "story" / "vectors", s, device=args.device, **tuning) for s in ("clip", "dino")}
    out["open_s"] = round(time.perf_counter() - t, 2)
    assert len(reopened["clip"]) == w.n and len(reopened["dino"]) == w.n
    reopened.clear()
    gc.collect()

    progress(f"saved in {out['save_s']} s, reopened in {out['open_s']} s")
    # rebuilding lost indexes from the graph
    source = store
    if graph_vectors == "sample":
        m = int(min(args.sample, w.n))
        source = open_store(tmp / "sample")
        load_structure(source, w)
        t = time.perf_counter()
        for lo in range(0, m, 100_000):
            hi = min(m, lo + 100_000)
            clip, dino = w.embed(lo, hi)
            load_appearances(source, w, lo, hi, clip, dino, memory_fields(w, lo, hi, dino))
        out["graph_vector_copy_s"] = round(time.perf_counter() - t, 2)
        out["graph_vector_rows"] = m
        ctx = []
        for _ in range(200):
            ids = [w.ids[j] for j in rng.integers(0, m, 130)]
            t = time.perf_counter()
            source.appearances(ids=ids, with_vectors=False)
            ctx.append((time.perf_counter() - t) * 1000)
        out["graph_context_p50_ms_vector_graph"] = round(statistics.median(ctx), 3)
    else:
        out["graph_vector_rows"] = w.n
    progress(f"graph holding {out['graph_vector_rows']} vectors ready; reconciling")
    fresh = {s: VectorIndex(s, device=args.device, **tuning) for s in ("clip", "dino")}
    t = time.perf_counter()
    counts = reconcile_all(source, fresh)
    out["reconcile_s"] = round(time.perf_counter() - t, 2)
    out["reconcile_rows"] = counts["clip"]["rows"]
    out["reconcile_s_per_1m"] = round(out["reconcile_s"] * 1_000_000 / max(1, counts["clip"]["rows"]), 1)
    if source is not store:
        source.close()
    store.close()


if __name__ == "__main__":
    main()
