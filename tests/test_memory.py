"""Memory maths: story clock, decays, reinforcement and penalty, the normalised retrieval score and its ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from storygraph.domain import MemoryParams, Transition
from storygraph.engine import memory

P = MemoryParams()


def test_gap_defaults_by_kind_and_override():
    assert [memory.gap_for(k) for k in ("continuous", "cut", "time_skip")] == [1.0, 2.0, 10.0]
    assert memory.gap_for("cut", 7.5) == 7.5
    assert memory.gap_for("time_skip", 0) == 0.0
    with pytest.raises(ValueError):
        memory.gap_for("flashback")
    with pytest.raises(ValueError):
        memory.gap_for("cut", -1.0)
    assert memory.story_clock(4.0, "time_skip") == 14.0
    assert memory.story_clock(4.0, "cut", 0.5) == 4.5


def test_clock_along_a_branching_timeline():
    # a -cont-> b -cut(3)-> c, and b -skip-> d: the re-exported placement uses the same gaps
    pl = memory.place_scenes(["a", "b", "c", "d"], [Transition("a", "b", "continuous"),
                                                    Transition("b", "c", "cut", gap=3.0),
                                                    Transition("b", "d", "time_skip")])
    assert [pl[s].clock for s in "abcd"] == [0.0, 1.0, 4.0, 11.0]
    assert pl["d"].has_ancestor(pl["b"].branch, pl["b"].pos)
    assert not pl["d"].has_ancestor(pl["c"].branch, pl["c"].pos)


def test_transition_decay():
    for gap, tau in ((1.0, 10.0), (10.0, 10.0), (3.0, 2.5)):
        assert math.isclose(memory.transition_decay(gap, tau), math.exp(-gap / tau))
    assert memory.transition_decay(0.0, 10.0) == 1.0
    assert memory.transition_decay(2.0, 10.0) > memory.transition_decay(10.0, 10.0)


def test_retention_formula_strength_and_clamp():
    tau = 20.0
    assert memory.retention(5.0, 5.0, 1.0, tau) == 1.0
    assert math.isclose(memory.retention(25.0, 5.0, 1.0, tau), math.exp(-1.0))
    assert math.isclose(memory.retention(45.0, 5.0, 2.0, tau), math.exp(-1.0))  # twice as strong: twice as slow
    assert memory.retention(30.0, 0.0, 3.0, tau) > memory.retention(30.0, 0.0, 1.0, tau)
    assert memory.retention(2.0, 9.0, 1.0, tau) == 1.0  # refreshed later in story time: never above 1
    clocks = np.array([0.0, 10.0, 40.0])
    arr = memory.retention(40.0, clocks, np.array([1.0, 2.0, 0.5]), tau)
    assert arr.shape == (3,)
    for i in range(3):
        assert math.isclose(arr[i], memory.retention(40.0, clocks[i], [1.0, 2.0, 0.5][i], tau))


def test_tau_for_character():
    assert memory.tau_for(None, P) == P.tau_character
    assert memory.tau_for(5.0, P) == 5.0
    assert memory.tau_for(0.0, P) == P.tau_character
    assert memory.tau_for(float("nan"), P) == P.tau_character


def test_initial_strength_from_identity():
    p = MemoryParams(strength_init=2.0, strength_min=0.25, strength_max=5.0)
    assert memory.initial_strength(1.0, p) == 2.0
    assert memory.initial_strength(0.5, p) == 1.0
    assert memory.initial_strength(0.01, p) == 0.25
    assert memory.initial_strength(-0.3, p) == 0.25
    assert memory.initial_strength(9.0, p) == 5.0


def test_reinforce_and_penalise_caps():
    p = MemoryParams(reinforce_step=1.0, penalty_step=0.5, strength_min=0.25, strength_max=3.0)
    assert memory.reinforce(1.0, p) == 2.0
    assert memory.reinforce(2.5, p) == 3.0
    assert memory.penalise(2.0, p) == 1.5
    assert memory.penalise(0.5, p) == 0.25


def test_update_strength_bands():
    p = MemoryParams(reinforce_threshold=0.8, drift_threshold=0.5, reinforce_step=1.0, penalty_step=1.0,
                     strength_min=0.25, strength_max=5.0)
    # good reuse: +1 and refreshed to the scene's clock
    assert memory.update_strength(2.0, 3.0, 0.85, 12.0, p) == (3.0, 12.0)
    assert memory.update_strength(2.0, 3.0, 0.8, 12.0, p) == (3.0, 12.0)
    # good reuse on an earlier clock (another branch) does not move the memory back in time
    assert memory.update_strength(2.0, 15.0, 0.9, 12.0, p) == (3.0, 15.0)
    # drift: -1, clock untouched
    assert memory.update_strength(2.0, 3.0, 0.3, 12.0, p) == (1.0, 3.0)
    assert memory.update_strength(0.5, 3.0, 0.1, 12.0, p) == (0.25, 3.0)
    # in between: unchanged
    assert memory.update_strength(2.0, 3.0, 0.6, 12.0, p) == (2.0, 3.0)
    # capped
    assert memory.update_strength(5.0, 3.0, 0.99, 12.0, p) == (5.0, 12.0)


def test_relevance_blend():
    p = MemoryParams(relevance_text_weight=0.25)
    rel = memory.relevance([0.8, 0.2], [0.4, 1.0], p)
    assert np.allclose(rel, [0.25 * 0.8 + 0.75 * 0.4, 0.25 * 0.2 + 0.75 * 1.0])
    assert np.allclose(memory.relevance(None, [0.4, 1.0], p), [0.4, 1.0])


def test_minmax():
    assert np.allclose(memory.minmax([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    assert np.allclose(memory.minmax([0.7, 0.7]), [1.0, 1.0])
    assert memory.minmax([]).size == 0


def test_retrieval_score_by_hand():
    p = MemoryParams(w_relevance=1.0, w_recency=2.0, w_quality=0.5)
    rel = [0.9, 0.5, 0.7]
    ret = [0.1, 0.6, 0.35]
    q = [0.8, 0.8, 0.9]
    got = memory.retrieval_scores(rel, ret, q, p)
    # rel -> [1, 0, .5]; ret -> [0, 1, .5]; q -> [0, 0, 1]
    assert np.allclose(got, [1.0, 2.0, 0.5 + 1.0 + 0.5])
    # with one candidate every term is "best": the score is the weights' sum
    assert np.allclose(memory.retrieval_scores([0.3], [0.2], [0.1], p), [3.5])


def test_rank_order_ties_follow_retention_then_strength_then_clock_then_id():
    scores = [1.0, 2.0, 2.0, 2.0, 2.0]
    ret = [0.9, 0.5, 0.7, 0.7, 0.7]
    strength = [1.0, 1.0, 1.0, 2.0, 2.0]
    clock = [0.0, 0.0, 0.0, 1.0, 3.0]
    ids = ["e", "d", "c", "b", "a"]
    assert memory.rank_order(scores, ret, strength, clock, ids) == [4, 3, 2, 1, 0]
    assert memory.rank_order([1.0, 1.0], [0.5, 0.5], [1.0, 1.0], [2.0, 2.0], ["y", "x"]) == [1, 0]


def test_stronger_memory_wins_a_relevance_tie_through_the_formula():
    # two candidates equally relevant and of equal quality, seen at the same clock: the stronger one decays
    # more slowly, so its retention term and therefore its score are higher
    tau, now = 20.0, 30.0
    ret = memory.retention(now, np.array([10.0, 10.0]), np.array([1.0, 3.0]), tau)
    scores = memory.retrieval_scores([0.6, 0.6], ret, [0.9, 0.9], P)
    assert scores[1] > scores[0]
    # and between equally strong ones, the more recently reinforced wins
    ret = memory.retention(now, np.array([5.0, 25.0]), np.array([1.0, 1.0]), tau)
    scores = memory.retrieval_scores([0.6, 0.6], ret, [0.9, 0.9], P)
    assert scores[1] > scores[0]


def test_strength_on_a_timeline_folds_its_uses_in_order():
    p = MemoryParams(reinforce_threshold=0.8, drift_threshold=0.5, reinforce_step=1.0, penalty_step=1.0,
                     strength_min=0.25, strength_max=3.0)
    assert memory.strength_on_timeline(1.0, 2.0, [], p) == (1.0, 2.0)  # no use: as formed
    # kept identity at clock 5 (+1, refreshed), drifted at 7 (-1), unmeasured at 8 (nothing), kept at 9 (+1)
    uses = [(5.0, 0.9), (7.0, 0.3), (8.0, None), (9.0, 0.85)]
    assert memory.strength_on_timeline(1.0, 2.0, uses, p) == (2.0, 9.0)
    assert memory.strength_on_timeline(2.5, 0.0, [(4.0, 0.9), (6.0, 0.9)], p) == (3.0, 6.0)  # capped


def test_shown_terms_add_up_to_the_shown_score():
    import itertools

    assert memory.shown_terms([1 / 3, 1 / 3, 1 / 3]) == ("1.00", ["0.34", "0.33", "0.33"])
    assert memory.shown_terms([0.5, 0.245, 0.125]) == ("0.87", ["0.50", "0.25", "0.12"])
    for terms in itertools.product([0.0, 0.004, 0.125, 1 / 3, 0.666, 0.995, 1.0], repeat=3):
        total, parts = memory.shown_terms(terms)
        assert round(sum(float(x) for x in parts), 2) == float(total), terms
        assert abs(float(total) - sum(terms)) <= 0.005 + 1e-9, terms
        assert all(abs(float(x) - t) < 0.01 for x, t in zip(parts, terms)), terms
