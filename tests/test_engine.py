"""StoryEngine through its Python API with tiny random-weight models: takes, choosing a take, the one-worker
rule, editing a generated scene, branches and timeline-bound retrieval, the event log, read-only queries,
and the reinforcement of the memories a scene used, on its own timeline.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace

import pytest

from support import graph_accepted_ids

ONE = (("s01-arrival",), ())
CONTINUOUS = (("s01-arrival", "s02-package"), (("s01-arrival", "s02-package", "continuous", None),))
CUT = (("s01-arrival", "s02-package"), (("s01-arrival", "s02-package", "cut", None),))


def _apps(engine, scene_id):
    """The scene's appearances of every take, by take number."""
    out: dict = {}
    for a in engine.store.appearances(scene_id=scene_id, accepted_only=False, with_vectors=False):
        out.setdefault(a.take, []).append(a)
    return out


def _index_ids(engine) -> dict:
    return {space: set(idx.ids()) for space, idx in engine.indexes().items()}


def _disk_index_ids(engine) -> dict:
    from storygraph.engine.vectors import VectorIndex

    return {space: set(VectorIndex.open(engine.dir / "vectors", space, device="cpu").ids())
            for space in ("clip", "dino")}


def _assert_chosen(engine, sid, chosen_take):
    takes = {t.take: t for t in engine.store.takes(sid)}
    assert [n for n, t in takes.items() if t.chosen] == [chosen_take]
    scene = engine.store.scene(sid)
    assert scene.status == "done"
    assert scene.chosen_take == chosen_take
    assert scene.video_path == takes[chosen_take].video_path
    apps = _apps(engine, sid)
    for n, group in apps.items():
        assert group, n
        for a in group:
            assert a.accepted == (n == chosen_take), (a.id, n, a.accepted)
    accepted = {a.id for a in apps[chosen_take]}
    rejected = {a.id for n, g in apps.items() if n != chosen_take for a in g}
    for space, ids in _index_ids(engine).items():
        assert accepted <= ids, space
        assert not (rejected & ids), space
    # the in-memory index holds exactly the graph's accepted appearances, and so do its files once saved
    graph = graph_accepted_ids(engine.store)
    assert _index_ids(engine) == {"clip": graph, "dino": graph}
    engine.save_index()
    assert _disk_index_ids(engine) == {"clip": graph, "dino": graph}
    return accepted, rejected


def test_two_takes_one_chosen_the_other_kept_out_of_memory(make_engine):
    e = make_engine(ONE)
    sid = "s01-arrival"
    made = e.generate(sid, takes=2)
    assert sorted(t.take for t in made) == [0, 1]
    takes = {t.take: t for t in e.store.takes(sid)}
    assert sorted(takes) == [0, 1]
    assert takes[0].seed != takes[1].seed
    # media paths are stored relative to the story folder, and name files in it
    assert all(t.video_path and not os.path.isabs(t.video_path) and (e.dir / t.video_path).is_file()
               for t in takes.values())
    assert takes[0].video_path != takes[1].video_path
    chosen = [n for n, t in takes.items() if t.chosen]
    assert len(chosen) == 1
    best, other = chosen[0], 1 - chosen[0]
    # default best_take_by is identity
    assert takes[best].scores.identity >= takes[other].scores.identity
    _assert_chosen(e, sid, best)

    e.choose_take(sid, other)
    _assert_chosen(e, sid, other)
    assert len(e.store.takes(sid)) == 2  # choosing makes nothing new


def test_generating_before_the_parent_is_done_is_refused(make_engine):
    from storygraph.engine.engine import EngineError

    e = make_engine(CONTINUOUS)
    with pytest.raises(EngineError, match="not generated"):
        e.generate("s02-package")
    scene = e.store.scene("s02-package")
    assert scene.status == "planned"
    assert e.store.takes("s02-package") == []


def test_one_generation_at_a_time(make_engine):
    from storygraph.engine.engine import EngineError

    e = make_engine(ONE)
    sid = "s01-arrival"
    started, release = threading.Event(), threading.Event()
    results: dict = {}

    def hold(scene_id, stage, info):
        if stage == "plan":
            started.set()
            release.wait(60)

    def first():
        try:
            results["first"] = e.generate(sid, progress=hold)
        except BaseException as exc:  # noqa: BLE001
            results["first"] = exc

    def second():
        try:
            results["second"] = e.generate(sid)
        except BaseException as exc:  # noqa: BLE001
            results["second"] = exc

    a = threading.Thread(target=first)
    a.start()
    try:
        assert started.wait(60), "the first generation never reached its plan stage"
        b = threading.Thread(target=second)
        b.start()
        b.join(60)
        assert not b.is_alive()
    finally:
        release.set()
        a.join(120)
    assert isinstance(results["second"], EngineError), results["second"]
    assert "already running" in str(results["second"])
    assert isinstance(results["first"], list) and len(results["first"]) == 1, results["first"]
    assert [t.take for t in e.store.takes(sid)] == [0]
    assert e.store.scene(sid).status == "done"


@pytest.mark.parametrize("edit", [
    {"action": "Mara stops under a lamp post and looks up at the rain, then keeps walking"},
    {"steps": 3},
], ids=["action", "steps"])
def test_editing_a_done_scene_makes_it_stale_then_a_new_take_replaces_it(make_engine, edit):
    e = make_engine(ONE)
    sid = "s01-arrival"
    e.generate(sid)
    old = e.store.takes(sid)
    assert [t.take for t in old] == [0]
    old_apps = {a.id for a in _apps(e, sid)[0]}

    rec = e.update_scene(sid, **edit)
    assert rec.status == "stale" and rec.stale_reason == f"edited: {next(iter(edit))}"
    assert rec.video_path == old[0].video_path  # it keeps its media until it is made again
    for k, v in edit.items():
        assert getattr(rec.spec, k) == v

    e.generate(sid)
    takes = {t.take: t for t in e.store.takes(sid)}
    assert sorted(takes) == [0, 1], "the edited scene reused its old take instead of making a new one"
    assert takes[0].prompt == old[0].prompt and takes[0].video_path == old[0].video_path  # old take kept
    assert takes[1].video_path != takes[0].video_path
    if "action" in edit:
        assert edit["action"] in takes[1].prompt and edit["action"] not in takes[0].prompt
    accepted, rejected = _assert_chosen(e, sid, 1)  # the stale take did not compete with the new one
    assert old_apps == rejected
    assert e.store.scene(sid).stale_reason == ""


def test_a_generation_stopped_by_ctrl_c_is_interrupted_and_run_makes_it(make_engine):
    e = make_engine(ONE)

    def stop(scene_id, stage, info):
        if stage == "generate":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        e.generate("s01-arrival", progress=stop)
    scene = e.store.scene("s01-arrival")
    assert scene.status == "interrupted" and "KeyboardInterrupt" in scene.notes
    assert e.run() == ["s01-arrival"]
    assert e.store.scene("s01-arrival").status == "done"


def test_a_new_branch_never_remembers_its_sibling(make_engine):
    from storygraph.timeline import child_placement

    e = make_engine(CONTINUOUS)
    e.run()
    s01, s02 = e.store.scene("s01-arrival"), e.store.scene("s02-package")
    assert s01.status == s02.status == "done"
    s01_apps = {a.id for a in e.store.appearances(scene_id=s01.id)}
    sibling_apps = {a.id for a in e.store.appearances(scene_id=s02.id, accepted_only=False)}
    assert s01_apps and sibling_apps

    alt = replace(s02.spec, id="s02-alt", title="Turning back",
                  action="Mara stops, turns around and walks back along the pier the way she came")
    rec = e.add_scene(alt, parent_id=s01.id, kind="cut")
    assert rec.placement.branch == "s02-alt"
    assert rec.placement.pos == 0
    assert rec.placement.parent_id == s01.id
    assert (s01.placement.branch, s01.placement.pos) in rec.placement.lineage
    assert e.store.scene(s02.id).placement.branch == s01.placement.branch  # the first child keeps the branch

    [query] = e.encoders.embed_text(["Mara turns around on the pier"])
    # on the sibling's own timeline its appearances are memory: the filter below has something to remove
    probe = child_placement(s02.placement, "probe", 2.0, continues_branch=True)
    on_sibling_line = {c.appearance.id for c in e.retriever.nearest_prior_appearances(
        probe, "mara", k=50, text_query=query)}
    assert on_sibling_line & sibling_apps

    found = {c.appearance.id for c in e.retriever.nearest_prior_appearances(rec, "mara", k=50, text_query=query)}
    assert found, "the branch retrieved nothing from its parent"
    assert found <= s01_apps
    assert not found & sibling_apps

    e.generate("s02-alt")
    used = {c.target_id for c in e.store.conditioned_on("s02-alt")}
    assert used, "the cut to the new branch was conditioned on nothing"
    assert not used & (sibling_apps | {s02.id})


def test_events_are_ordered_and_cover_every_stage(make_engine):
    from storygraph.engine.engine import STAGES

    e = make_engine(ONE)
    start = e.store.last_event_seq()
    seen = []
    e.on_event(lambda sid, stage, info: seen.append((sid, stage)))
    e.generate("s01-arrival")
    events = list(e.events(since=start))
    assert events
    seqs = [ev.seq for ev in events]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
    assert seqs[0] > start
    stages = [json.loads(ev.payload)["stage"] for ev in events
              if ev.kind == "scene.stage" and ev.ref_id == "s01-arrival"]
    assert list(dict.fromkeys(stages)) == list(STAGES)
    assert [s for _, s in seen] == stages
    kinds = [ev.kind for ev in events]
    assert "scene.generating" in kinds and "take.committed" in kinds and kinds[-1] == "scene.done"
    # since= skips what was read
    assert [ev.seq for ev in e.events(since=seqs[-2])] == [seqs[-1]]


@pytest.mark.parametrize("cypher", [
    "CREATE (n:Scene {id: 'intruder'})",
    "MATCH (s:Scene) SET s.status = 'failed'",
    "MATCH (s:Scene) DETACH DELETE s",
    "MATCH (s:Scene) WITH s LIMIT 1 MERGE (s)-[:NEXT]->(s)",
])
def test_query_is_read_only(make_engine, cypher):
    from storygraph.graphdb import ReadOnlyViolation

    e = make_engine(CONTINUOUS)
    before = e.query("MATCH (s:Scene) RETURN s.id AS id, s.status AS status ORDER BY id").rows
    assert [r[0] for r in before] == ["s01-arrival", "s02-package"]
    with pytest.raises(ReadOnlyViolation):
        e.query(cypher)
    assert e.query("MATCH (s:Scene) RETURN s.id AS id, s.status AS status ORDER BY id").rows == before
    assert e.query("MATCH ()-[r:NEXT]->() RETURN count(r) AS n").rows == [[1]]


@pytest.mark.parametrize("memory", [{}, {"reinforce_threshold": -1.0}], ids=["defaults", "always-reinforce"])
def test_memory_used_as_keyframe_is_reinforced_on_its_timeline_by_the_takes_identity(make_engine, memory):
    from storygraph.engine.memory import update_strength
    from storygraph.timeline import child_placement

    e = make_engine(CUT, memory=memory)
    params = e.config.memory
    e.generate("s01-arrival")
    before = {a.id: a for a in e.store.appearances(scene_id="s01-arrival", with_vectors=False)}
    assert before

    e.generate("s02-package")
    keyframes = [c for c in e.store.conditioned_on("s02-package") if c.role == "memory"]
    assert keyframes and {c.mode for c in keyframes} == {"context"}, "the cut used no memory"
    assert {c.target_id for c in keyframes} <= set(before)
    scene = e.store.scene("s02-package")
    [take] = [t for t in e.store.takes("s02-package") if t.chosen]
    # the graph keeps each memory as it was formed ...
    after = {a.id: a for a in e.store.appearances(ids=[c.target_id for c in keyframes], with_vectors=False)}
    for c in keyframes:
        assert (after[c.target_id].strength, after[c.target_id].reinforced_clock) == (
            before[c.target_id].strength, before[c.target_id].reinforced_clock)
    # ... and a scene after s02 on its timeline remembers it as the use left it; one beside s02 as it was formed
    [query] = e.encoders.embed_text(["Mara on the pier"])
    later = child_placement(scene.placement, "later", 2.0, continues_branch=True)
    beside = child_placement(e.store.scene("s01-arrival").placement, "beside", 2.0, continues_branch=False)
    for c in keyframes:
        b = before[c.target_id]
        identity = take.scores.identity_by_character[b.character_id]
        strength, clock = update_strength(b.strength, b.reinforced_clock, identity, scene.clock, params)
        [here] = [x for x in e.retriever.nearest_prior_appearances(later, "mara", k=50, text_query=query)
                  if x.appearance.id == c.target_id]
        assert (here.strength, here.reinforced_clock, here.uses) == (pytest.approx(strength), pytest.approx(clock), 1)
        [there] = [x for x in e.retriever.nearest_prior_appearances(beside, "mara", k=50, text_query=query)
                   if x.appearance.id == c.target_id]
        assert (there.strength, there.reinforced_clock, there.uses) == (b.strength, b.reinforced_clock, 0)
        if memory:  # every identity reinforces: the memory must have changed on s02's timeline
            assert here.strength == pytest.approx(min(b.strength + params.reinforce_step, params.strength_max))
            assert here.reinforced_clock == pytest.approx(max(b.reinforced_clock, scene.clock))
            assert here.reinforced_clock != b.reinforced_clock
