"""The StoryStore contract, run against every backend: known answers for every named query."""

from __future__ import annotations

import inspect
from dataclasses import replace
import math

import pytest

from storygraph.domain import Appearance, Character, ConditionRecord, Environment, SceneSpec, Scores, Story, Transition
from storygraph.graphdb import StoreError
from storygraph.graphdb import queries
from storygraph.graphdb.base import CypherStore
from storygraph.graphdb.store import SceneCommit, TakeRecord, TransitionRecord

def small_story() -> Story:
    return Story(
        "tiny", "Tiny",
        characters=(Character("mara", "Mara", "red coat", decay_tau=12.0), Character("ivo", "Ivo", "grey beard")),
        environments=(Environment("pier", "a wet pier", "Pier"), Environment("cabin", "a cabin")),
        scenes=(
            SceneSpec("a", "walks", ("mara",), "pier"),
            SceneSpec("b", "runs", ("mara", "ivo"), "pier", seed=5),
            SceneSpec("c", "sits", ("ivo",), "cabin"),
            SceneSpec("d", "sleeps", ("ivo",)),
        ),
        transitions=(Transition("a", "b", "continuous"), Transition("b", "c", "cut", gap=3.0),
                     Transition("b", "d", "time_skip")),
    )


def appearance(aid, char, scene, clock, branch="a", pos=0, take=0, strength=1.0, dim=4):
    return Appearance(aid, char, scene, 2, f"/m/{aid}.png", strength, clock, 0.9, [0.5] * dim, [0.25] * dim,
                      clock=clock, branch=branch, pos=pos, take=take)


def commit(scene, take, apps, cond=(), choose=True, reinf=()):
    return SceneCommit(TakeRecord(scene, take, 10 + take, f"prompt {scene} {take}", f"/m/{scene}/{take}.mp4",
                                  f"/m/{scene}/{take}.png", f"/m/{scene}/{take}", Scores(0.3, 0.9, 0.8, 0.7, None,
                                                                                           {"mara": 0.7})),
                       list(apps), list(cond), list(reinf), choose)


def test_load_is_idempotent_with_known_counts(store):
    first = store.load_story(small_story())
    assert first.created == {"Story": 1, "Character": 2, "Environment": 2, "Scene": 4, "Appearance": 0, "Take": 0,
                             "Event": 0}
    second = store.load_story(small_story())
    assert set(second.created.values()) == {0}
    rows = store.query("MATCH (c:Character)-[:APPEARS_IN]->(s:Scene) RETURN c.id AS c, count(s) AS n ORDER BY c").rows
    assert rows == [["ivo", 3], ["mara", 2]]
    assert [(t.from_id, t.to_id, t.kind, t.gap) for t in store.transitions()] == [
        ("a", "b", "continuous", 1.0), ("b", "c", "cut", 3.0), ("b", "d", "time_skip", 10.0)]
    assert math.isclose(store.transitions()[1].decay, math.exp(-3.0 / store.memory.tau_story))
    assert [c.id for c in store.characters()] == ["ivo", "mara"]
    assert store.characters()[1].decay_tau == 12.0
    assert [(e.id, e.name) for e in store.environments()] == [("cabin", ""), ("pier", "Pier")]
    assert store.story_meta()["title"] == "Tiny"


def test_scenes_in_timeline_order_with_placement(store):
    store.load_story(small_story())
    scenes = store.scenes()
    assert [s.id for s in scenes] == ["a", "b", "c", "d"]
    by = {s.id: s for s in scenes}
    assert (by["c"].clock, by["c"].placement.branch, by["c"].placement.pos) == (4.0, "a", 2)
    assert (by["d"].clock, by["d"].placement.branch, by["d"].placement.lineage) == (11.0, "d", (("a", 1),))
    assert by["b"].spec.seed == 5 and by["a"].spec.seed == 0  # defaults resolved at load
    assert by["a"].spec.width == 768 and by["a"].status == "planned"
    assert [s.id for s in store.scenes(status="planned")] == ["a", "b", "c", "d"]


def test_reloading_a_changed_story_updates_links(store):
    store.load_story(small_story())
    s = small_story()
    changed = Story(s.id, s.title, s.characters, s.environments,
                    (s.scenes[0], SceneSpec("b", "runs", ("ivo",), "cabin"), *s.scenes[2:]), s.transitions)
    store.load_story(changed)
    ctx = store.scene_context("b")
    assert [c.id for c in ctx.characters] == ["ivo"]
    assert ctx.environment.id == "cabin"


def test_scene_context_known_answer(store):
    store.load_story(small_story())
    ctx = store.scene_context("c")
    assert ctx.scene.id == "c" and ctx.parent.id == "b"
    assert (ctx.transition.kind, ctx.transition.gap) == ("cut", 3.0)
    assert [c.id for c in ctx.characters] == ["ivo"]
    assert ctx.environment.id == "cabin" and ctx.environment.description == "a cabin"
    root = store.scene_context("a")
    assert root.parent is None and root.transition is None
    assert store.scene_context("d").environment is None
    with pytest.raises(StoreError):
        store.scene_context("nope")


def test_commit_take_is_idempotent_and_writes_memory(store):
    store.load_story(small_story())
    app = appearance("a#0#mara", "mara", "a", 0.0)
    c = commit("a", 0, [app], [ConditionRecord("reference", "Scene", "b", 0, 1.0, None, "why")])
    seq1 = store.commit_take(c)
    seq2 = store.commit_take(c)
    assert seq1 == seq2
    assert store._counts()["Appearance"] == 1 and store._counts()["Take"] == 1
    scene = store.scene("a")
    assert (scene.status, scene.chosen_take, scene.prompt, scene.takes) == ("done", 0, "prompt a 0", 1)
    assert scene.scores.identity == 0.7
    got = store.appearances(character_id="mara")
    assert [a.id for a in got] == ["a#0#mara"] and got[0].accepted and len(got[0].clip) == 4
    assert store.appearances(ids=["a#0#mara"], with_vectors=False)[0].clip == []
    for kw in ({"character_id": "mara"}, {"scene_id": "a"}, {}):
        meta = store.appearances(with_vectors=False, **kw)
        assert [(a.id, a.clip, a.dino, a.strength) for a in meta] == [("a#0#mara", [], [], 1.0)]
    assert store.appearances(ids=[]) == []
    assert [a.id for a in store.appearances()] == ["a#0#mara"]
    assert list(store.appearance_keys()) == [("a#0#mara", "mara")]
    assert store.conditioned_on("a") == [ConditionRecord("reference", "Scene", "b", 0, 1.0, None, "why")]
    strength = store.query("MATCH (:Character {id: 'mara'})-[r:APPEARS_IN]->(:Scene {id: 'a'}) "
                           "RETURN r.strength AS s, r.identity AS i").rows
    assert strength == [[1.0, 0.9]]


def test_takes_choose_and_reinforce(store):
    store.load_story(small_story())
    store.commit_take(commit("a", 0, [appearance("a#0#mara", "mara", "a", 0.0)]))
    b0 = appearance("b#0#mara", "mara", "b", 1.0, pos=1, take=0)
    b1 = appearance("b#1#mara", "mara", "b", 1.0, pos=1, take=1)
    cond = [ConditionRecord("memory", "Appearance", "a#0#mara", -16, 1.0, 0.87, "nearest prior", "context"),
            ConditionRecord("extension", "Scene", "a", 0, 1.0, None, "continuous", "extend"),
            ConditionRecord("reference", "Reference", "refs/mara coat.png", 9, 0.8, None, "costume", "keyframe")]
    store.commit_take(commit("b", 0, [b0], cond, choose=True, reinf=[("a#0#mara", 2.0, 1.0)]))
    store.commit_take(commit("b", 1, [b1], [], choose=False))
    assert [(t.take, t.chosen) for t in store.takes("b")] == [(0, True), (1, False)]
    assert {a.id for a in store.appearances(character_id="mara")} == {"a#0#mara", "b#0#mara"}
    assert len(store.appearances(character_id="mara", accepted_only=False)) == 3
    assert [(a.id, a.accepted) for a in store.appearances(scene_id="b", accepted_only=False)] == [
        ("b#0#mara", True), ("b#1#mara", False)]
    reinforced = store.appearances(ids=["a#0#mara"])[0]
    assert (reinforced.strength, reinforced.reinforced_clock) == (2.0, 1.0)
    assert store.conditioned_on("b") == cond  # the mode and the negative (before the clip) index kept
    modes = store.query("MATCH (:Scene {id: 'b'})-[r:CONDITIONED_ON]->() RETURN r.mode AS m, r.frame_index AS i "
                        "ORDER BY i").rows
    assert modes == [["context", -16], ["extend", 0], ["keyframe", 9]]
    with pytest.raises(StoreError):
        store.commit_take(commit("c", 0, [], [ConditionRecord("x", "Planet", "p", 0, 1.0, None, "")]))
    assert store.takes("c") == []  # the refused commit left nothing behind
    assert store.conditioned_on("b", take=1) == []
    store.choose_take("b", 1)
    assert store.scene("b").chosen_take == 1 and store.scene("b").prompt == "prompt b 1"
    assert {a.id for a in store.appearances(character_id="mara")} == {"a#0#mara", "b#1#mara"}
    with pytest.raises(StoreError):
        store.choose_take("b", 7)


def test_appearance_arrays_come_in_batches_of_columns(store):
    store.load_story(small_story())
    store.commit_take(commit("a", 0, [appearance("a#0#mara", "mara", "a", 0.0)]))
    store.commit_take(commit("b", 0, [appearance("b#0#mara", "mara", "b", 1.0, pos=1),
                                      appearance("b#0#ivo", "ivo", "b", 1.0, pos=1)]))
    batches = list(store.appearance_arrays(batch=2))
    assert [len(b["id"]) for b in batches] == [2, 1]
    got = {i: (c, br, int(p), float(k)) for b in batches
           for i, c, br, p, k in zip(b["id"], b["character_id"], b["branch"], b["pos"], b["clock"])}
    assert got == {"a#0#mara": ("mara", "a", 0, 0.0), "b#0#mara": ("mara", "a", 1, 1.0),
                   "b#0#ivo": ("ivo", "a", 1, 1.0)}
    assert all(b["clip"].shape == (len(b["id"]), 4) and b["clip"].dtype.name == "float32" for b in batches)
    [only] = list(store.appearance_arrays(ids=["b#0#ivo", "nope"], spaces=("dino",)))
    assert only["id"] == ["b#0#ivo"] and "clip" not in only and only["dino"].tolist() == [[0.25] * 4]


def test_events_are_monotonic_and_replayable(store):
    store.load_story(small_story())
    loaded = store.events_since(0)
    assert [(e.seq, e.kind, e.ref_id) for e in loaded] == [(1, "story.loaded", "tiny")]
    store.load_story(small_story())  # nothing changed: no event
    assert store.last_event_seq() == 1
    seqs = [store.append_event("note", "a", {"i": i}) for i in range(5)]
    seqs.append(store.set_scene_status("a", "generating", note="started"))
    assert seqs == [2, 3, 4, 5, 6, 7]
    assert [e.seq for e in store.events_since(3, limit=3)] == [4, 5, 6]
    assert store.append_events([("x", "a", None), ("y", "b", {"k": 1})]) == 9
    assert [(e.kind, e.ref_id, e.payload) for e in store.events_since(7)] == [("x", "a", "{}"), ("y", "b", '{"k": 1}')]
    assert store.last_event_seq() == 9
    assert store.scene("a").status == "generating" and "started" in store.scene("a").notes
    with pytest.raises(StoreError):
        store.set_scene_status("a", "bogus")


def test_single_upserts(store):
    store.load_story(small_story())
    store.upsert_character(Character("zed", "Zed", "new"))
    store.upsert_environment(Environment("roof", "a roof"))
    from storygraph.timeline import child_placement

    parent = store.scene("c").placement
    store.upsert_scene(SceneSpec("e", "climbs", ("zed",), "roof"), child_placement(parent, "e", 2.0, True))
    store.upsert_transition(TransitionRecord("c", "e", "cut", 2.0, 0.8))
    ctx = store.scene_context("e")
    assert ctx.parent.id == "c" and [c.id for c in ctx.characters] == ["zed"] and ctx.environment.id == "roof"
    assert ctx.scene.spec.width == 768  # defaults filled from the stored story


def test_children_dependents_and_deleting(store):
    """A scene's children; who was made from it (an extension, a remembered appearance); deleting a scene takes its
    takes and appearances with it and writes the placements given; deleting a transition likewise."""
    from storygraph.domain import Placement

    store.load_story(small_story())
    assert store.scene_children("b") == ["c", "d"] and store.scene_children("c") == []
    store.commit_take(commit("a", 0, [appearance("a0m", "mara", "a", 0.0)]))
    store.commit_take(commit("b", 0, [appearance("b0m", "mara", "b", 1.0, pos=1), appearance("b0i", "ivo", "b", 1.0, pos=1)],
                             cond=[ConditionRecord("extension", "Scene", "a", 0, 1.0, None, "continuous from a")]))
    store.commit_take(commit("c", 0, [appearance("c0i", "ivo", "c", 4.0, pos=2)],
                             cond=[ConditionRecord("keyframe", "Appearance", "b0i", 0, 0.6, 0.5, "memory of ivo")]))
    assert store.scene_dependents("a") == ["b"]
    assert store.scene_dependents("b") == ["c"]  # c remembers b's appearance of ivo
    assert store.scene_dependents("c") == [] and store.scene_dependents("d") == []
    d = store.scene("d")
    loose = Placement("d", 0.0, "d", 0)  # d, cut loose from b, starts a timeline
    seq = store.delete_transition("b", "d", [(d.spec, loose)])
    assert seq == store.last_event_seq() and store.events_since(seq - 1)[-1].kind == "transition.deleted"
    assert [(t.from_id, t.to_id) for t in store.transitions()] == [("a", "b"), ("b", "c")]
    assert (store.scene("d").placement.parent_id, store.scene("d").placement.branch, store.scene("d").clock) == (
        None, "d", 0.0)
    assert store.scene("d").spec.characters == ("ivo",)
    removed = store.delete_scene("c")
    assert removed == ["c0i"] and store.scene("c") is None and store.takes("c") == []
    assert store.appearances(scene_id="c", accepted_only=False) == []
    assert store.scene_dependents("b") == [] and store.scene_children("b") == []
    rows = store.query("MATCH (t:Take) RETURN t.scene_id AS s ORDER BY s", {}, read_only=True).rows
    assert rows == [["a"], ["b"]]
    assert store.events_since(store.last_event_seq() - 1)[-1].kind == "scene.deleted"
    with pytest.raises(StoreError):
        store.delete_scene("c")
    with pytest.raises(StoreError):
        store.delete_transition("b", "c-missing")



def _contract() -> list:
    """Every test above that takes nothing but a store: together, the contract."""
    return [fn for name, fn in sorted(globals().items()) if name.startswith("test_") and callable(fn)
            and list(inspect.signature(fn).parameters) == ["store"]]


def test_every_named_query_ran(backend, make_store, monkeypatch):
    """Every query the backend has is exercised by the contract. This test runs the whole contract itself on
    fresh stores, with query lookup instrumented (not replaced), so it holds whatever ran before it or was
    deselected."""
    used: set[str] = set()
    original = CypherStore.q

    def q(self, name):
        used.add(name)
        return original(self, name)

    monkeypatch.setattr(CypherStore, "q", q)
    contract = _contract()
    assert len(contract) >= 8
    for i, test in enumerate(contract):
        test(make_store(f"contract-{i}"))
    dialect = "ladybug" if backend == "ladybug" else "neo4j"
    bulk_only = {n for n in queries.names() if n.startswith("copy_")} | {"schema"}
    expected = set(queries.all_for(dialect)) - bulk_only
    assert expected - used == set()


def test_a_scenes_memory_mode_round_trips(store):
    story = small_story()
    scenes = tuple(replace(s, memory="keyframe") if s.id == "c" else s for s in story.scenes)
    store.load_story(replace(story, scenes=scenes))
    assert store.scene("c").spec.memory == "keyframe" and store.scene("b").spec.memory is None
    assert store.scene_context("c").scene.spec.memory == "keyframe"


def test_an_older_graph_gains_the_new_columns_on_open(backend, tmp_path):
    """A LadybugDB graph made before scenes had a memory mode and edges a mode opens and keeps its edges (with no
    mode: the store reads it as "")."""
    if backend != "ladybug":
        pytest.skip("Neo4j has no schema to migrate")
    import ladybug

    from storygraph.graphdb import queries
    from storygraph.graphdb.embedded import EmbeddedStore

    old = queries.load("schema", "ladybug").replace(", memory STRING", "").replace(", mode STRING", "")
    assert "memory STRING" not in old and "mode STRING" not in old
    (tmp_path / "old").mkdir()
    db = ladybug.Database(str(tmp_path / "old" / "graph"))
    conn = ladybug.Connection(db)
    for stmt in old.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.execute("CREATE (:Scene {id: 'a', story_id: 'tiny'}), (:Scene {id: 'b', story_id: 'tiny'})")
    conn.execute("MATCH (a:Scene {id: 'a'}), (b:Scene {id: 'b'}) CREATE (b)-[:CONDITIONED_ON {take: 0, "
                 "role: 'extension', frame_index: 0, strength: 1.0, reason: 'old'}]->(a)")
    conn.close()
    db.close()
    s = EmbeddedStore(tmp_path / "old")
    try:
        got = s.query("MATCH (:Scene {id: 'b'})-[r:CONDITIONED_ON]->() RETURN r.reason, r.mode", {}).rows
        assert got == [["old", None]]
        assert s.query("MATCH (x:Scene {id: 'a'}) RETURN x.memory", {}).rows == [[None]]
    finally:
        s.close()
    s = EmbeddedStore(tmp_path / "old")  # opening again changes nothing
    s.close()
