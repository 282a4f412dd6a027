"""Retrieval of a character's nearest prior appearances over a real LadybugDB graph and real vector indexes.

The story (cut gap 2, so clocks are 0, 2, 4, ...):

    main:   s0 pier -> s1 lighthouse -> s2 market -> s3 lighthouse -> s4 cabin -> s5 (query)
    branch:                              s2 -> t3 lighthouse -> t4 market -> t5 (query)

Mara appears in s0..s4 and t3, t4; at s3 she is off-model (somebody else in her outfit), and the observer said so
(identity score 0.3). Ivo appears in s0, s1, s2 with identical embeddings, so only strength and recency separate
his memories.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from storygraph.domain import Character, MemoryParams, Transition
from storygraph.engine import memory
from storygraph.engine.retrieval import Retriever, nearest_prior_appearances
from storygraph.engine.vectors import VectorIndex

from support import Planted, commit, embedded_store, make_appearance, memory_story, used

MAIN = [("s0", "pier"), ("s1", "lighthouse"), ("s2", "market"), ("s3", "lighthouse"), ("s4", "cabin")]
SIDE = [("t3", "lighthouse"), ("t4", "market")]
IVO_TAU = 4.0


@pytest.fixture
def world(tmp_path):
    planted = Planted(42)
    scenes = [(sid, env, ("mara", "ivo") if sid in ("s0", "s1", "s2") else ("mara",)) for sid, env in MAIN + SIDE]
    scenes += [("s5", "lighthouse", ("mara", "ivo")), ("t5", "lighthouse", ("mara",))]
    transitions = [Transition("s0", "s1", "cut"), Transition("s1", "s2", "cut"), Transition("s2", "s3", "cut"),
                   Transition("s2", "t3", "cut"), Transition("s3", "s4", "cut"), Transition("s4", "s5", "cut"),
                   Transition("t3", "t4", "cut"), Transition("t4", "t5", "cut")]
    st = memory_story(scenes, transitions, (Character("mara", "Mara"), Character("ivo", "Ivo", decay_tau=IVO_TAU)))
    store = embedded_store(tmp_path / "story")
    store.load_story(st)
    ivo_dino, ivo_clip = planted.dino("ivo", noise=0.0), planted.clip("ivo", "market", noise=0.0)
    ivo = {"s0": dict(strength=3.0, reinforced_clock=0.0), "s1": dict(strength=1.0, reinforced_clock=2.0),
           "s2": dict(strength=1.0, reinforced_clock=4.0)}
    for sid, env in MAIN + SIDE:
        apps = [make_appearance(store, f"{sid}-mara", "mara", sid, planted.dino("mara", off_model=sid == "s3"),
                                planted.clip("mara", env), identity_score=0.3 if sid == "s3" else 0.9)]
        if sid in ivo:
            apps.append(make_appearance(store, f"{sid}-ivo", "ivo", sid, ivo_dino, ivo_clip, **ivo[sid]))
        commit(store, sid, apps)
    clip = VectorIndex("clip", folder=tmp_path / "vectors")
    dino = VectorIndex("dino", folder=tmp_path / "vectors")
    clip.reconcile(store)
    dino.reconcile(store)
    yield store, Retriever(store, clip, dino, MemoryParams()), planted
    store.close()


def ids(cands):
    return [c.appearance.id for c in cands]


def test_right_appearance_ranks_first_and_sibling_branch_never_returns(world):
    store, r, planted = world
    # with equal weights a perfect match six clock units back ties with a recent mismatch (min-max puts the
    # recency extremes at 0 and 1): weigh recency at half so that relevance decides, as this test is about it
    r.params = MemoryParams(w_recency=0.5)
    q = planted.text("mara", "lighthouse")
    on_main = r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=q)
    assert ids(on_main)[0] == "s1-mara"
    assert set(ids(on_main)) == {"s0-mara", "s1-mara", "s2-mara", "s4-mara"}  # no t3/t4, no off-model s3
    on_side = r.nearest_prior_appearances(store.scene("t5"), "mara", 10, text_query=q)
    # t3 (lighthouse) is as relevant as s1 and more recent on this timeline
    assert ids(on_side)[0] == "t3-mara"
    assert set(ids(on_side)) == {"s0-mara", "s1-mara", "s2-mara", "t3-mara", "t4-mara"}
    # a query for the market finds the market of each timeline
    market = planted.text("mara", "market")
    assert ids(r.nearest_prior_appearances(store.scene("t5"), "mara", 1, text_query=market)) == ["t4-mara"]
    assert ids(r.nearest_prior_appearances(store.scene("s5"), "mara", 1, text_query=market)) == ["s2-mara"]
    # the candidate carries what the engine needs: frame, vectors, raw terms
    top = on_main[0]
    assert top.frame_path == "/media/s1-mara.png"
    assert len(top.appearance.dino) == planted.dim and len(top.appearance.clip) == planted.dim
    assert top.relevance > 0.5 and 0 < top.retention <= 1 and top.quality == pytest.approx(0.9)


def test_drift_guard_excludes_off_model_memory(world):
    store, r, planted = world
    q = planted.text("mara", "lighthouse")
    ref = planted.reference("mara")
    guarded = r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=q, identity_ref=ref)
    assert "s3-mara" not in ids(guarded)
    # the guard reads the identity score users see for each appearance (the observer's), not a raw cosine
    assert all(c.quality >= MemoryParams().drift_threshold for c in guarded)
    # the guard, not anything else, is what kept it out: without it, it comes back
    loose = r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=q, identity_ref=ref,
                                        params=MemoryParams(drift_threshold=-1.0))
    assert "s3-mara" in ids(loose)
    off = next(c for c in loose if c.appearance.id == "s3-mara")
    assert off.quality == pytest.approx(0.3) and off.quality < MemoryParams().drift_threshold
    # on that scale, a threshold just under its score lets it in and one just over keeps it out
    assert "s3-mara" in ids(r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=q,
                                                        params=MemoryParams(drift_threshold=0.29)))
    assert "s3-mara" not in ids(r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=q,
                                                            params=MemoryParams(drift_threshold=0.31)))
    # and the off-model take is never returned at any k, nor on the side timeline where it is not an ancestor
    for k in (1, 3, 50):
        assert "s3-mara" not in ids(r.nearest_prior_appearances(store.scene("s5"), "mara", k, text_query=q))
    assert "s3-mara" not in ids(r.nearest_prior_appearances(store.scene("t5"), "mara", 50, text_query=q,
                                                            params=MemoryParams(drift_threshold=-1.0)))


def test_identity_reference_defaults_to_first_appearance_on_the_timeline(world):
    store, r, planted = world
    got = r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=planted.text("mara", "pier"))
    first = next(c for c in got if c.appearance.id == "s0-mara")
    assert first.identity == pytest.approx(1.0, abs=1e-5)
    with_ref = r.nearest_prior_appearances(store.scene("s5"), "mara", 10, text_query=planted.text("mara", "pier"),
                                           identity_ref=planted.reference("mara"))
    assert next(c for c in with_ref if c.appearance.id == "s0-mara").identity < 0.999
    # no prior appearance on the timeline: nothing to remember
    assert r.nearest_prior_appearances(store.scene("s0"), "mara", 5, text_query=planted.text("mara", "pier")) == []


def test_ties_broken_by_strength_and_recency_with_character_tau(world):
    store, r, planted = world
    s5 = store.scene("s5")
    got = r.nearest_prior_appearances(s5, "ivo", 3, text_query=planted.text("ivo", "market"))
    # identical embeddings and quality: s0 is strongest (3.0), s2 more recently reinforced than s1
    assert ids(got) == ["s0-ivo", "s2-ivo", "s1-ivo"]
    expected = {"s0-ivo": math.exp(-(10 - 0) / (IVO_TAU * 3.0)), "s1-ivo": math.exp(-(10 - 2) / IVO_TAU),
                "s2-ivo": math.exp(-(10 - 4) / IVO_TAU)}
    for c in got:
        assert c.retention == pytest.approx(expected[c.appearance.id])
        assert c.relevance == pytest.approx(got[0].relevance, abs=1e-6)
    # the character's tau is read from the graph; an explicit one overrides it
    slow = r.nearest_prior_appearances(s5, "ivo", 3, text_query=planted.text("ivo", "market"), tau_character=100.0)
    assert next(c for c in slow if c.appearance.id == "s1-ivo").retention == pytest.approx(math.exp(-8 / 100))


def test_scores_are_the_memory_formula_over_the_candidates(world):
    store, r, planted = world
    p = MemoryParams(w_relevance=1.0, w_recency=0.7, w_quality=0.3)
    got = r.nearest_prior_appearances(store.scene("t5"), "mara", 50, text_query=planted.text("mara", "market"),
                                      params=p)
    want = memory.retrieval_scores([c.relevance for c in got], [c.retention for c in got],
                                   [c.quality for c in got], p)
    assert np.allclose([c.score for c in got], want)
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)
    for c in got:
        assert c.retention == pytest.approx(memory.retention(10.0, c.appearance.reinforced_clock,
                                                             c.appearance.strength, p.tau_character))
        # the three parts add up to the score, each within its weight
        assert sum(c.terms) == pytest.approx(c.score)
        assert all(0 <= t <= w + 1e-12 for t, w in zip(c.terms, (p.w_relevance, p.w_recency, p.w_quality)))


def test_uses_on_the_timeline_move_strengths_and_ranking_and_nowhere_else(world):
    store, r, planted = world
    params = MemoryParams()
    s3_clock = store.scene("s3").clock
    # s3 used s1-ivo and kept Ivo's identity (0.95): +1 and refreshed; s4 used s0-ivo and drifted (0.2): -1
    commit(store, "s3", [], take=1, conditioned_on=used("s1-ivo"), identity={"ivo": 0.95})
    commit(store, "s4", [], take=1, conditioned_on=used("s0-ivo"), identity={"ivo": 0.2})
    good = memory.update_strength(1.0, 2.0, 0.95, s3_clock, params)
    bad = memory.update_strength(3.0, 0.0, 0.2, store.scene("s4").clock, params)
    assert good == (2.0, s3_clock) and bad == (2.0, 0.0)
    # the graph keeps each memory as it was formed
    formed = {a.id: (a.strength, a.reinforced_clock) for a in store.appearances(ids=["s0-ivo", "s1-ivo"])}
    assert formed == {"s0-ivo": (3.0, 0.0), "s1-ivo": (1.0, 2.0)}
    got = r.nearest_prior_appearances(store.scene("s5"), "ivo", 3, text_query=planted.text("ivo", "market"))
    # s1: exp(-4/8) = .61, s0: exp(-10/8) = .29, s2: exp(-6/4) = .22
    assert ids(got) == ["s1-ivo", "s0-ivo", "s2-ivo"]
    here = {c.appearance.id: (c.strength, c.reinforced_clock, c.uses) for c in got}
    assert here == {"s1-ivo": (*good, 1), "s0-ivo": (*bad, 1), "s2-ivo": (1.0, 4.0, 0)}
    # on the side timeline (through s2, not s3 or s4) neither use happened: memories as formed, ranking as formed
    side = r.nearest_prior_appearances(store.scene("t5"), "ivo", 3, text_query=planted.text("ivo", "market"))
    assert ids(side) == ["s0-ivo", "s2-ivo", "s1-ivo"]
    assert {c.appearance.id: (c.strength, c.reinforced_clock, c.uses) for c in side} == {
        "s0-ivo": (3.0, 0.0, 0), "s1-ivo": (1.0, 2.0, 0), "s2-ivo": (1.0, 4.0, 0)}
    assert [c.retention for c in side] == pytest.approx([math.exp(-10 / 12), math.exp(-6 / 4), math.exp(-8 / 4)])


def test_uses_apply_in_timeline_order(world):
    store, r, planted = world
    # s3 (clock 6) drifts with s1-ivo, then s4 (clock 8) keeps identity with it: -1 floors at 0.25, then +1
    commit(store, "s4", [], take=1, conditioned_on=used("s1-ivo"), identity={"ivo": 0.95})
    commit(store, "s3", [], take=1, conditioned_on=used("s1-ivo"), identity={"ivo": 0.1})
    [c] = [c for c in r.nearest_prior_appearances(store.scene("s5"), "ivo", 3, text_query=planted.text("ivo", "market"))
           if c.appearance.id == "s1-ivo"]
    assert (c.strength, c.reinforced_clock, c.uses) == (1.25, 8.0, 2)


def test_function_form_and_exact_flag_agree(world):
    store, r, planted = world
    q = planted.text("mara", "cabin")
    a = nearest_prior_appearances(store, r.clip, r.dino, store.scene("s5").placement, "mara", 3, text_query=q)
    b = r.nearest_prior_appearances(store.scene("s5"), "mara", 3, text_query=q, exact=True)
    assert ids(a) == ids(b) and ids(a)[0] == "s4-mara"
    assert r.nearest_prior_appearances(store.scene("s5"), "nobody", 3, text_query=q) == []
    assert r.nearest_prior_appearances(store.scene("s5"), "mara", 0, text_query=q) == []


def test_retrieval_bench_runs_and_reports_consistently(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "retrieval.py"
    proc = subprocess.run([sys.executable, str(bench), "--appearances", "3000", "--characters", "5", "--dim", "64",
                           "--queries", "60", "--recall-queries", "20", "--exact-threshold", "500",
                           "--exact-allowed", "100", "--folder", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("appearances", "device", "p50_ms", "p99_ms", "recall_at_10", "build_s", "reconcile_s", "rss_mb"):
        assert key in out
    assert out["appearances"] == 3000 and out["device"] == "cpu"
    assert out["reconcile_rows"] == 3000 and out["graph_vector_rows"] == 3000
    assert out["approximate_characters"] >= 1 and out["recall_at_10_searches"] > 0
    assert 0 < out["p50_ms"] <= out["p99_ms"]
    assert out["recall_at_10"] >= 0.9
