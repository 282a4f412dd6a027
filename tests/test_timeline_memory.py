"""Memory is kept per timeline: a branching story generated in two branch orders (tiny random-weight models) gives
the same conditioning, the same retrieval results and the same memory strengths on every timeline.

    s01 ──cut──> s02 ──cut──> a3 ──cut──> a4
                   └──cut──> b3 ──cut──> b4

Every scene shows Mara, and every use of a memory reinforces it (``reinforce_threshold = -1``), so a use made on
one branch would change what the other remembers if reinforcement crossed branches.
"""

from __future__ import annotations

import pytest

from storygraph.domain import Transition
from storygraph.timeline import child_placement

from support import harbor_story, new_engine

SCENES = ("s01-arrival", "s02-package", "s03-keeper", "s04-meeting", "s05-beam", "s06-escape")
A3, A4, B3, B4 = "s03-keeper", "s04-meeting", "s05-beam", "s06-escape"
TRANSITIONS = (("s01-arrival", "s02-package", "cut", None), ("s02-package", A3, "cut", None), (A3, A4, "cut", None),
               ("s02-package", B3, "cut", None), (B3, B4, "cut", None))
ORDERS = {"a-first": ("s01-arrival", "s02-package", A3, A4, B3, B4),
          "b-first": ("s01-arrival", "s02-package", B3, B4, A3, A4)}


def _story():
    from dataclasses import replace

    story = harbor_story(SCENES, TRANSITIONS)
    mara_only = tuple(replace(s, characters=("mara",), references=()) for s in story.scenes)
    return replace(story, scenes=mara_only, characters=tuple(c for c in story.characters if c.id == "mara"),
                   transitions=tuple(Transition(a, b, k, g) for a, b, k, g in TRANSITIONS))


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_config, tiny_runtime):
    """What each order left: per scene its provenance and scores, and per timeline what is remembered after it."""
    out = {}
    for name, order in ORDERS.items():
        engine = new_engine(tmp_path_factory.mktemp(name), tiny_config, tiny_runtime, _story(),
                            memory={"reinforce_threshold": -1.0, "drift_threshold": -1.0}, engine={"look_strength": 0.0})
        try:
            for sid in order:
                engine.generate(sid)
            [query] = engine.encoders.embed_text(["Mara on the pier at night"])
            seen = {}
            for sid in SCENES:
                scene = engine.store.scene(sid)
                after = child_placement(scene.placement, "after", 2.0, continues_branch=True)
                seen[sid] = {
                    "conditioned_on": engine.store.conditioned_on(sid),
                    "scores": scene.scores.as_dict(),
                    "remembered": [(c.appearance.id, c.score, c.terms, c.strength, c.reinforced_clock, c.uses)
                                   for c in engine.retriever.nearest_prior_appearances(after, "mara", k=20,
                                                                                      text_query=query)],
                }
            out[name] = seen
        finally:
            engine.close()
    return out


def test_both_orders_condition_every_scene_alike(generated):
    a, b = generated["a-first"], generated["b-first"]
    for sid in SCENES:
        assert a[sid]["conditioned_on"] == b[sid]["conditioned_on"], sid  # targets, scores and reasons
        assert a[sid]["scores"] == b[sid]["scores"], sid


def test_both_orders_remember_alike_on_every_timeline(generated):
    a, b = generated["a-first"], generated["b-first"]
    for sid in SCENES:
        assert a[sid]["remembered"] == b[sid]["remembered"], sid


def test_the_test_has_something_to_tell_apart(generated):
    """Memories were used and reinforced on each branch, differently: were reinforcement shared between branches,
    the orders above would differ."""
    seen = generated["a-first"]
    used_a = {c.target_id for sid in (A3, A4) for c in seen[sid]["conditioned_on"] if c.target_kind == "Appearance"}
    used_b = {c.target_id for sid in (B3, B4) for c in seen[sid]["conditioned_on"] if c.target_kind == "Appearance"}
    assert used_a and used_b
    after_a4 = {aid: (strength, uses) for aid, _, _, strength, _, uses in seen[A4]["remembered"]}
    after_b4 = {aid: (strength, uses) for aid, _, _, strength, _, uses in seen[B4]["remembered"]}
    shared = set(after_a4) & set(after_b4)  # s01's and s02's memories, remembered on both timelines
    assert any(after_a4[aid][1] for aid in shared) and any(after_b4[aid][1] for aid in shared)
    for aid in shared:  # each timeline counts its own uses only
        uses_a = sum(1 for sid in (A3, A4) for c in seen[sid]["conditioned_on"] if c.target_id == aid)
        uses_b = sum(1 for sid in (B3, B4) for c in seen[sid]["conditioned_on"] if c.target_id == aid)
        uses_before = sum(1 for c in seen["s02-package"]["conditioned_on"] if c.target_id == aid)
        assert after_a4[aid][1] == uses_before + uses_a, aid
        assert after_b4[aid][1] == uses_before + uses_b, aid
