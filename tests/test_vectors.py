"""Vector indexes: exact and approximate search per character, timeline restriction, persistence, reconcile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from storygraph.domain import Placement
from storygraph.engine.vectors import VectorIndex, exact_knn, reconcile_all

from support import Planted, commit, embedded_store, make_appearance, memory_story, unit
from storygraph.domain import Character, Transition


def branching_rows(rng, n_main=40, fork_at=19, n_side=30, dim=16, chars=("a", "b")):
    """Rows on a main branch (pos 0..n_main-1) and a side branch forked after main pos ``fork_at``."""
    ids, cids, br, pos, clock = [], [], [], [], []
    for i in range(n_main):
        for c in chars:
            ids.append(f"m{i}-{c}"), cids.append(c), br.append("main"), pos.append(i), clock.append(float(i))
    for j in range(n_side):
        for c in chars:
            ids.append(f"s{j}-{c}"), cids.append(c), br.append("side"), pos.append(j), clock.append(fork_at + 1.0 + j)
    vecs = rng.standard_normal((len(ids), dim)).astype(np.float32)
    return ids, cids, vecs, br, np.array(pos), np.array(clock)


def reference_allowed(ids, cids, br, pos, character, placement):
    return {i for i, c, b, p in zip(ids, cids, br, pos) if c == character and placement.has_ancestor(b, int(p))}


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_search_known_answer_and_character_partition(backend):
    rng = np.random.default_rng(1)
    ids, cids, vecs, br, pos, clock = branching_rows(rng)
    idx = VectorIndex("clip", backend=backend, device="cpu")
    idx.add_arrays(ids, cids, vecs, br, pos, clock)
    assert len(idx) == len(ids) and idx.count("a") == len(ids) // 2
    target = ids.index("m7-a")
    got, scores = idx.search("a", vecs[target] + 0.01 * rng.standard_normal(16).astype(np.float32), 5)
    assert got[0] == "m7-a"
    assert all(g.endswith("-a") for g in got)
    assert list(scores) == sorted(scores, reverse=True)
    # the same vector searched as character b never yields a's row
    got_b, _ = idx.search("b", vecs[target], 80)
    assert "m7-a" not in got_b and len(got_b) == idx.count("b")
    none_ids, none_scores = idx.search("nobody", vecs[0], 3)
    assert none_ids == [] and len(none_scores) == 0


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_timeline_restriction_matches_has_ancestor(backend):
    rng = np.random.default_rng(2)
    ids, cids, vecs, br, pos, clock = branching_rows(rng)
    idx = VectorIndex("dino", backend=backend, device="cpu")
    idx.add_arrays(ids, cids, vecs, br, pos, clock)
    on_side = Placement("x", 30.0, "side", 10, lineage=(("main", 19),))
    on_main = Placement("y", 35.0, "main", 35)
    for placement in (on_side, on_main, Placement("z", 0.0, "main", 0)):
        want = reference_allowed(ids, cids, br, pos, "a", placement)
        assert set(idx.allowed("a", placement)) == want
        got, _ = idx.search("a", vecs[ids.index("s5-a")], 200, placement)
        assert set(got) == want  # k above the allowed count: exactly the timeline comes back
    # a query identical to a sibling-branch row never returns it on the main timeline
    got, _ = idx.search("a", vecs[ids.index("s3-a")], 5, on_main)
    assert "s3-a" not in got and all(g.startswith("m") for g in got)
    # ...but does on its own branch
    assert idx.search("a", vecs[ids.index("s3-a")], 1, on_side)[0] == ["s3-a"]
    # first and most recent on the timeline
    assert idx.first("a", on_side) == "m0-a"
    assert idx.recent("a", on_side, 3) == ["s9-a", "s8-a", "s7-a"]
    assert idx.recent("a", on_main, 2) == ["m34-a", "m33-a"]
    assert idx.first("a", Placement("z", 0.0, "main", 0)) is None


def planted_partition(n, dim, seed, envs=60, outfits=6):
    """One character's appearances: identity + environment + outfit + noise (real-data-like structure)."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((envs, dim)); E /= np.linalg.norm(E, axis=1, keepdims=True)
    O = rng.standard_normal((outfits, dim)); O /= np.linalg.norm(O, axis=1, keepdims=True)
    ident = unit(rng.standard_normal(dim))
    e, o = rng.integers(0, envs, n), rng.integers(0, outfits, n)
    noise = rng.standard_normal((n, dim)); noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    X = ident + 0.8 * E[e] + 0.5 * O[o] + 0.4 * noise
    Q = ident * 0.5 + E[rng.integers(0, envs, 40)] + 0.3 * rng.standard_normal((40, dim)) / np.sqrt(dim)
    return X.astype(np.float32), Q.astype(np.float32)


def test_approximate_path_recall_and_timeline():
    n, dim = 6000, 64
    X, Q = planted_partition(n, dim, seed=3)
    ids = [f"r{i}" for i in range(n)]
    br = ["main" if i < 4000 else "side" for i in range(n)]
    pos = np.array([i if i < 4000 else i - 4000 for i in range(n)])
    idx = VectorIndex("clip", exact_threshold=1000, exact_allowed=300)
    idx.add_arrays(ids, ["c"] * n, X, br, pos, pos.astype(float))
    assert idx.stats()["approximate_partitions"] == 1
    on_side = Placement("q", 9999.0, "side", 1500, lineage=(("main", 2999),))
    allowed = set(idx.allowed("c", on_side))
    assert len(allowed) == 3000 + 1500
    for placement in (None, on_side):
        hits = 0
        for q in Q:
            approx, _ = idx.search("c", q, 10, placement)
            exact, _ = idx.search("c", q, 10, placement, exact=True)
            assert len(approx) == 10
            if placement is not None:
                assert set(approx) <= allowed
            hits += len(set(approx) & set(exact))
        assert hits / (10 * len(Q)) >= 0.9
    # the exact path itself equals brute force
    exact, s = idx.search("c", Q[0], 10, on_side, exact=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = Q[0] / np.linalg.norm(Q[0])
    brute = sorted(allowed, key=lambda i: -float(Xn[int(i[1:])] @ q))[:10]
    assert exact == brute


def test_remove_upsert_and_compaction_keep_ids_right():
    rng = np.random.default_rng(4)
    n, dim = 3000, 32
    X = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"r{i}" for i in range(n)]
    idx = VectorIndex("dino", exact_threshold=500, exact_allowed=100)
    idx.add_arrays(ids, ["c"] * n, X, ["main"] * n, np.arange(n), np.arange(n, dtype=float))
    gone = ids[:1500]  # enough to trigger compaction
    assert idx.remove(gone + ["unknown"]) == 1500
    assert len(idx) == 1500 and "r0" not in idx and "r1500" in idx
    for i in (1500, 2222, 2999):
        assert idx.search("c", X[i], 1)[0] == [f"r{i}"]
        assert idx.search("c", X[i], 1, exact=True)[0] == [f"r{i}"]
    assert idx.search("c", X[3], 3)[0][0] != "r3"
    # upsert: the same id with a new vector replaces the old one
    new = rng.standard_normal(dim).astype(np.float32)
    idx.add_arrays(["r2222"], ["c"], new[None], ["main"], [2222], [2222.0])
    assert len(idx) == 1500
    assert idx.search("c", new, 1)[0] == ["r2222"]
    present, v = idx.vectors(["r2222", "r0"])
    assert present.tolist() == [True, False]
    assert np.allclose(v[0], new / np.linalg.norm(new), atol=1e-6)
    # moving an appearance to another character re-partitions it
    idx.add_arrays(["r2222"], ["d"], new[None], ["main"], [2222], [2222.0])
    assert idx.character_of("r2222") == "d" and idx.count("c") == 1499


def test_dimension_mismatch_is_an_error():
    idx = VectorIndex("clip")
    idx.add_arrays(["a"], ["c"], np.ones((1, 8), np.float32), ["main"], [0], [0.0])
    with pytest.raises(ValueError):
        idx.add_arrays(["b"], ["c"], np.ones((1, 9), np.float32), ["main"], [0], [0.0])
    with pytest.raises(ValueError):
        idx.search("c", np.ones(9, np.float32), 1)
    with pytest.raises(ValueError):
        VectorIndex("colour")


def test_exact_knn_matches_numpy_with_mask():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((500, 24)).astype(np.float32)
    q = rng.standard_normal(24).astype(np.float32)
    mask = rng.random(500) < 0.3
    rows, scores = exact_knn(q, X, 7, mask)
    s = X @ q
    s[~mask] = -np.inf
    assert rows.tolist() == np.argsort(-s)[:7].tolist()
    assert np.allclose(scores, np.sort(s)[::-1][:7], atol=1e-5)


def test_save_open_roundtrip_and_only_changed_partitions_rewritten(tmp_path):
    rng = np.random.default_rng(6)
    ids, cids, vecs, br, pos, clock = branching_rows(rng, chars=("a", "b", "c"))
    big, Q = planted_partition(2500, 16, seed=7)
    idx = VectorIndex("clip", folder=tmp_path, exact_threshold=1000)
    idx.add_arrays(ids, cids, vecs, br, pos, clock)
    idx.add_arrays([f"big{i}" for i in range(2500)], ["big"] * 2500, big, ["main"] * 2500, np.arange(2500),
                   np.arange(2500, dtype=float))
    idx.remove(["m3-a"])
    assert idx.save() is True
    assert idx.save() is False  # nothing changed
    manifest = json.loads((tmp_path / "clip" / "manifest.json").read_text())
    files1 = {c: v["file"] for c, v in manifest["parts"].items()}
    again = VectorIndex.open(tmp_path, "clip", exact_threshold=1000)
    assert again.ids() == idx.ids() and again.stats()["approximate_partitions"] == 1
    pl = Placement("x", 30.0, "side", 10, lineage=(("main", 19),))
    for c in ("a", "b", "c", "big"):
        for q in (vecs[0], vecs[5], Q[0]):
            assert again.search(c, q, 5, pl)[0] == idx.search(c, q, 5, pl)[0]
        assert again.first(c, pl) == idx.first(c, pl)
        assert again.recent(c, pl, 4) == idx.recent(c, pl, 4)
    # change one partition: only its file is rewritten
    again.add_arrays(["new-b"], ["b"], vecs[:1], ["main"], [50], [50.0])
    again.save()
    manifest2 = json.loads((tmp_path / "clip" / "manifest.json").read_text())
    files2 = {c: v["file"] for c, v in manifest2["parts"].items()}
    assert files2["b"] != files1["b"]
    assert {c: files2[c] for c in ("a", "c", "big")} == {c: files1[c] for c in ("a", "c", "big")}
    on_disk = {f.name for f in (tmp_path / "clip").iterdir()}
    assert on_disk == set(files2.values()) | {"manifest.json", ".lock"}


def test_two_writers_never_leave_a_manifest_naming_missing_files(tmp_path):
    rng = np.random.default_rng(12)
    ids, cids, vecs, br, pos, clock = branching_rows(rng, chars=("a", "b"))
    first = VectorIndex("clip", folder=tmp_path)
    first.add_arrays(ids, cids, vecs, br, pos, clock)
    first.save()
    second = VectorIndex.open(tmp_path, "clip")
    second.add_arrays(["only-second"], ["b"], vecs[:1], ["main"], [99], [99.0])
    second.save()  # rewrites b, deletes the file of b that `first` still believes is on disk
    first.add_arrays(["only-first"], ["a"], vecs[1:2], ["main"], [98], [98.0])
    assert first.save() is True
    last = VectorIndex.open(tmp_path, "clip")
    assert last.ids() == first.ids()  # last writer wins, and everything it names is there
    manifest = json.loads((tmp_path / "clip" / "manifest.json").read_text())
    assert all((tmp_path / "clip" / v["file"]).exists() for v in manifest["parts"].values())


def test_stray_files_are_ignored_and_a_damaged_manifest_opens_empty(tmp_path):
    rng = np.random.default_rng(8)
    ids, cids, vecs, br, pos, clock = branching_rows(rng)
    idx = VectorIndex("dino", folder=tmp_path)
    idx.add_arrays(ids, cids, vecs, br, pos, clock)
    idx.save()
    folder = tmp_path / "dino"
    # what an interrupted save leaves: a half-written next-generation file and a temporary manifest
    (folder / "a-deadbeef00-99.npz").write_bytes(b"partial")
    (folder / "manifest.json.tmp").write_text("{")
    again = VectorIndex.open(tmp_path, "dino")
    assert again.ids() == idx.ids()
    (folder / "manifest.json").write_text("{ not json")
    broken = VectorIndex.open(tmp_path, "dino")
    assert len(broken) == 0  # the graph is the source of truth: reconcile refills it


def test_torch_path_follows_appends_and_removals():
    rng = np.random.default_rng(9)
    ids, cids, vecs, br, pos, clock = branching_rows(rng)
    idx = VectorIndex("clip", backend="torch", device="cpu", torch_dtype="bfloat16")
    cpu = VectorIndex("clip")
    for ix in (idx, cpu):
        ix.add_arrays(ids, cids, vecs, br, pos, clock)
    pl = Placement("y", 35.0, "main", 35)
    for i in range(0, len(ids), 7):
        a, _ = idx.search("a", vecs[i], 5, pl)
        b, _ = cpu.search("a", vecs[i], 5, pl)
        assert a == b  # bf16 candidates, float32 re-rank: the same answer as exact float32
    extra = rng.standard_normal(16).astype(np.float32)
    idx.add_arrays(["late"], ["a"], extra[None], ["main"], [30], [30.0])
    assert idx.search("a", extra, 1, pl)[0] == ["late"]
    idx.remove(["late", "m4-a"])
    got, _ = idx.search("a", extra, 100, pl)
    assert "late" not in got and "m4-a" not in got
    assert set(got) == reference_allowed(ids, cids, br, pos, "a", pl) - {"m4-a"}


def _small_graph(tmp_path, planted):
    chars = (Character("mara", "Mara"), Character("ivo", "Ivo"))
    st = memory_story([("s0", "pier", ("mara",)), ("s1", "cabin", ("mara", "ivo")), ("s2", "pier", ("ivo",)),
                ("t2", "hill", ("mara",))],
               [Transition("s0", "s1", "cut"), Transition("s1", "s2", "cut"), Transition("s1", "t2", "cut")], chars)
    store = embedded_store(tmp_path / "story")
    store.load_story(st)
    clips = {}
    for sid, env, cast in [("s0", "pier", ("mara",)), ("s1", "cabin", ("mara", "ivo")), ("s2", "pier", ("ivo",)),
                           ("t2", "hill", ("mara",))]:
        apps = [make_appearance(store, f"{sid}-{c}", c, sid, planted.dino(c), planted.clip(c, env)) for c in cast]
        clips.update({a.id: np.asarray(a.clip) for a in apps})
        commit(store, sid, apps)
    return store, clips


def test_reconcile_adds_missing_and_drops_orphans(tmp_path):
    planted = Planted(10)
    store, clips = _small_graph(tmp_path, planted)
    try:
        graph = dict(store.appearance_keys())
        clip = VectorIndex("clip", folder=tmp_path / "vectors")
        dino = VectorIndex("dino", folder=tmp_path / "vectors")
        # stale state: an orphan the graph never had, one appearance filed under the wrong character
        for ix in (clip, dino):
            ix.add_arrays(["ghost", "s0-mara"], ["mara", "ivo"], np.ones((2, planted.dim), np.float32),
                          ["s0", "s0"], [0, 0], [0.0, 0.0])
        got = clip.reconcile(store)
        assert got["removed"] == 2 and got["added"] == len(graph)
        assert {i: clip.character_of(i) for i in clip.ids()} == graph
        present, v = clip.vectors(["s1-ivo"])
        assert present[0] and np.allclose(v[0], clips["s1-ivo"], atol=1e-5)
        assert clip.reconcile(store) == {"added": 0, "removed": 0, "moved": 0, "rows": len(graph)}
        counts = reconcile_all(store, {"dino": dino})
        assert counts["dino"]["added"] == len(graph) and counts["dino"]["removed"] == 2
        assert {i: dino.character_of(i) for i in dino.ids()} == graph
        # placements come from the graph
        pl = store.scene("s2").placement
        assert set(dino.allowed("mara", pl)) == {"s0-mara", "s1-mara"}
    finally:
        store.close()


class ArrayReadingStore:
    """The real store, with the bulk ``appearance_arrays`` reads reconcile makes recorded (in batches of two)."""

    def __init__(self, store, batch: int = 2):
        self.store, self.batch, self.calls = store, batch, []

    def appearance_keys(self):
        return self.store.appearance_keys()

    def appearance_arrays(self, ids=None, spaces=("clip", "dino"), batch=2000):
        self.calls.append((None if ids is None else sorted(ids), tuple(spaces)))
        yield from self.store.appearance_arrays(ids, spaces, batch=self.batch)


def test_reconcile_through_bulk_arrays(tmp_path):
    planted = Planted(11)
    store, clips = _small_graph(tmp_path, planted)
    try:
        graph = dict(store.appearance_keys())
        bulk = ArrayReadingStore(store)
        idx = {s: VectorIndex(s) for s in ("clip", "dino")}
        counts = reconcile_all(bulk, idx)
        assert bulk.calls == [(None, ("clip", "dino"))]  # everything missing: one full read for both spaces
        for s, ix in idx.items():
            assert counts[s]["added"] == len(graph)
            assert {i: ix.character_of(i) for i in ix.ids()} == graph
        assert np.allclose(idx["clip"].vectors(["t2-mara"])[1][0], clips["t2-mara"], atol=1e-5)
        idx["dino"].remove(["s1-ivo"])
        single = VectorIndex("clip")
        single.add_arrays(["s0-mara"], ["mara"], clips["s0-mara"][None], ["s0"], [0], [0.0])
        assert single.reconcile(bulk)["added"] == len(graph) - 1
        assert reconcile_all(bulk, [idx["dino"]])["dino"]["added"] == 1
        assert bulk.calls[-1] == (["s1-ivo"], ("dino",))
        assert set(single.ids()) == set(graph) == idx["dino"].ids()
    finally:
        store.close()
