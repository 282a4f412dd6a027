"""The StoryStore contract, run against every backend: known answers for every named query, and what an edit makes
stale."""

from __future__ import annotations

import inspect
from dataclasses import replace
import math

import pytest

from storygraph.domain import Appearance, Character, ConditionRecord, Environment, SceneSpec, Scores, Story, Transition
from storygraph.graphdb import StoreError
from storygraph.graphdb import queries
from storygraph.graphdb.base import CypherStore
from storygraph.graphdb.store import SceneCommit, StoreConflict, TakeRecord, TransitionRecord
from storygraph.ripple import Cause

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


def commit(scene, take, apps, cond=(), choose=True, identity=None):
    return SceneCommit(TakeRecord(scene, take, 10 + take, f"prompt {scene} {take}", f"/m/{scene}/{take}.mp4",
                                  f"/m/{scene}/{take}.png", f"/m/{scene}/{take}", Scores(0.3, 0.9, 0.8, 0.7, None,
                                                                                           identity or {"mara": 0.7})),
                       list(apps), list(cond), choose)


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


def test_takes_choose_and_the_uses_of_a_memory(store):
    store.load_story(small_story())
    store.commit_take(commit("a", 0, [appearance("a#0#mara", "mara", "a", 0.0)]))
    b0 = appearance("b#0#mara", "mara", "b", 1.0, pos=1, take=0)
    b1 = appearance("b#1#mara", "mara", "b", 1.0, pos=1, take=1)
    cond = [ConditionRecord("memory", "Appearance", "a#0#mara", -16, 1.0, 0.87, "nearest prior", "context"),
            ConditionRecord("extension", "Scene", "a", 0, 1.0, None, "continuous", "extend"),
            ConditionRecord("reference", "Reference", "refs/mara coat.png", 9, 0.8, None, "costume", "keyframe")]
    store.commit_take(commit("b", 0, [b0], cond, choose=True))
    store.commit_take(commit("b", 1, [b1], [], choose=False))
    assert [(t.take, t.chosen) for t in store.takes("b")] == [(0, True), (1, False)]
    assert {a.id for a in store.appearances(character_id="mara")} == {"a#0#mara", "b#0#mara"}
    assert len(store.appearances(character_id="mara", accepted_only=False)) == 3
    assert [(a.id, a.accepted) for a in store.appearances(scene_id="b", accepted_only=False)] == [
        ("b#0#mara", True), ("b#1#mara", False)]
    # a memory is stored as it was formed; its uses (by chosen takes, with the identity each kept) are read apart
    formed = store.appearances(ids=["a#0#mara"])[0]
    assert (formed.strength, formed.reinforced_clock) == (1.0, 0.0)
    uses = {a.id: a.uses for a in store.appearances(ids=["a#0#mara", "b#0#mara"], with_vectors=False)}
    assert uses == {"a#0#mara": [("b", 0.7)], "b#0#mara": []}
    assert store.scene_placements(["b", "nope"]) == {"b": (1.0, "a", 1)} and store.scene_placements([]) == {}
    # the index rebuilt from the edges says the same (an older story is indexed once, when an engine opens it)
    assert store.memory_indexed() and store.index_memory() == 1
    assert [a.uses for a in store.appearances(ids=["a#0#mara"], with_vectors=False)] == [[("b", 0.7)]]
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
    assert store.appearances(ids=["a#0#mara"])[0].uses == []  # take 1 of b used nothing
    with pytest.raises(StoreError):
        store.choose_take("b", 7)


# -- edits ripple --------------------------------------------------------------------------------------------------
def generated(store):
    """The small story generated: b extends a and remembers a's Mara; c (a cut after b) remembers b's Ivo; d (a
    time skip after b) used only a reference image; every take chosen."""
    store.load_story(small_story())
    store.commit_take(commit("a", 0, [appearance("a#0#mara", "mara", "a", 0.0)]))
    store.commit_take(commit("b", 0, [appearance("b#0#mara", "mara", "b", 1.0, pos=1),
                                      appearance("b#0#ivo", "ivo", "b", 1.0, pos=1)],
                             [ConditionRecord("extension", "Scene", "a", 0, 1.0, None, "extends a"),
                              ConditionRecord("keyframe", "Appearance", "a#0#mara", 9, 0.6, 0.8, "memory")]))
    store.commit_take(commit("c", 0, [appearance("c#0#ivo", "ivo", "c", 4.0, pos=2)],
                             [ConditionRecord("keyframe", "Appearance", "b#0#ivo", 0, 0.6, 0.9, "memory")],
                             identity={"ivo": 0.9}))
    store.commit_take(commit("d", 0, [appearance("d#0#ivo", "ivo", "d", 11.0, branch="d")],
                             [ConditionRecord("reference", "Reference", "refs/ivo.png", 0, 1.0, None, "ref")],
                             identity={"ivo": 0.8}))


def stale(store) -> dict:
    return {s.id: (s.status, s.stale_reason, s.stale_from) for s in store.scenes() if s.stale_reason}


def test_the_dependency_rows_of_every_generated_scene(store):
    generated(store)
    rows = {(r["id"], r["kind"], r["target"], r["target_scene"]) for r in store.stale_dependencies()}
    assert rows == {("a", None, None, None), ("b", "Scene", "a", None), ("b", "Appearance", "a#0#mara", "a"),
                    ("c", "Appearance", "b#0#ivo", "b"), ("d", "Reference", "refs/ivo.png", None)}
    by_id = {r["id"]: r for r in store.stale_dependencies()}
    assert (by_id["c"]["status"], list(by_id["c"]["characters"]), by_id["c"]["environment"], by_id["c"]["clock"],
            by_id["c"]["pos"]) == ("done", ["ivo"], "cabin", 4.0, 2)


def test_editing_a_scene_marks_it_and_exactly_what_was_made_from_it(store):
    generated(store)
    before = store.last_event_seq()
    marks = store.update_scene(SceneSpec("a", "walks", ("mara",), "pier", lighting="green flare"))
    assert marks == {"a": "edited: lighting", "b": "upstream a: edited: lighting",
                     "c": "upstream a: edited: lighting (made from b)"}
    assert stale(store) == {"a": ("stale", "edited: lighting", "a"), "b": ("stale", "upstream a: edited: lighting", "a"),
                            "c": ("stale", "upstream a: edited: lighting (made from b)", "a")}
    assert store.scene("d").status == "done"  # a sibling branch that used nothing of a or b
    assert store.scene("a").video_path == "/m/a/0.mp4"  # the media stays until it is made again
    assert sorted(e.ref_id for e in store.events_since(before) if e.kind == "scene.stale") == ["a", "b", "c"]
    # already stale: the first reason stays, nothing is marked twice
    assert store.update_scene(SceneSpec("a", "walks", ("mara",), "pier", lighting="red flare")) == {}
    assert store.scene("a").stale_reason == "edited: lighting"
    # an unchanged spec changes nothing; choosing a take (the user's word) clears its scene
    assert store.update_scene(SceneSpec("d", "sleeps", ("ivo",))) == {}
    store.choose_take("a", 0)
    assert store.scene("a").status == "done" and store.scene("a").stale_reason == ""
    # a scene without media goes back to planned when edited after a failure
    store.load_story(Story("tiny", "Tiny", scenes=(SceneSpec("e", "waits"),)))
    store.set_scene_status("e", "failed", note="boom")
    assert store.update_scene(SceneSpec("e", "waits longer")) == {}
    assert store.scene("e").status == "planned"


def test_a_large_stale_set_writes_one_event(store, monkeypatch):
    import storygraph.graphdb.base as base

    generated(store)
    monkeypatch.setattr(base, "STALE_EVENTS_MAX", 2)
    before = store.last_event_seq()
    marks = store.update_scene(SceneSpec("a", "walks", ("mara",), "pier", lighting="green flare"))
    assert set(marks) == {"a", "b", "c"}
    events = store.events_since(before)
    assert [(e.kind, e.ref_id) for e in events] == [("story.stale", "tiny")]
    assert '"count": 3' in events[0].payload


def test_marking_stale_a_changed_scene_and_a_source(store):
    generated(store)
    assert store.mark_stale({"b": Cause("b", "media missing: /m/b/0.mp4")}) == {
        "b": "media missing: /m/b/0.mp4", "c": "upstream b: media missing: /m/b/0.mp4"}
    assert set(stale(store)) == {"b", "c"}
    assert store.mark_stale({}) == {}


def test_choosing_another_take_makes_what_was_made_from_the_old_one_stale(store):
    generated(store)
    store.commit_take(commit("b", 1, [appearance("b#1#ivo", "ivo", "b", 1.0, pos=1, take=1)], choose=False))
    assert stale(store) == {}  # a take that does not continue the timeline changes nothing
    store.choose_take("b", 1)
    assert stale(store) == {"c": ("stale", "upstream b: take 1 chosen instead of take 0", "b")}
    assert store.scene("b").status == "done"


def test_a_changed_character_or_place_marks_the_scenes_that_show_it(store):
    generated(store)
    assert store.upsert_environment(Environment("cabin", "a burnt cabin")) == {
        "c": "environment cabin changed: description"}
    marks = store.upsert_character(Character("mara", "Mara", "a green coat", decay_tau=12.0))
    # a and b show her (c, made from b, is stale already: its first reason stays)
    assert marks == {"a": "character mara changed: description", "b": "character mara changed: description"}
    assert store.upsert_character(Character("mara", "Mara", "a green coat", decay_tau=12.0)) == {}  # unchanged
    assert store.upsert_character(Character("zed", "Zed", "new")) == {}  # a new character changes nothing
    assert {c.id for c in store.characters()} == {"ivo", "mara", "zed"}
    store.upsert_character(Character("ivo", "Ivo", "grey beard", reference_path="/refs/ivo2.png",
                                     reference_sha="1234"))
    assert stale(store)["d"] == ("stale", "character ivo changed: reference", "d")
    assert store.characters()[0].reference_sha == "1234"


def test_a_reloaded_story_applies_its_changes_and_marks_them(store):
    generated(store)
    s = small_story()
    scenes = (s.scenes[0], SceneSpec("b", "runs", ("mara", "ivo"), "pier", seed=5, camera="handheld"), *s.scenes[2:])
    # c now follows a directly (its old transition from b goes), d's time skip is longer
    transitions = (Transition("a", "b", "continuous"), Transition("a", "c", "cut", gap=3.0),
                   Transition("b", "d", "time_skip", gap=20.0))
    summary = store.load_story(Story(s.id, s.title, s.characters, s.environments, scenes, transitions))
    assert summary.changes["scenes"] == {"b": ["camera"]}
    assert summary.changes["moved"] == {"c": ["b", "a"]}
    assert summary.changes["transitions"] == {"d": ["gap"]}
    assert summary.stale == {"b": "edited: camera", "c": "moved: now follows a", "d": "transition from b changed: gap"}
    assert [(t.from_id, t.to_id) for t in store.transitions()] == [("a", "b"), ("a", "c"), ("b", "d")]
    c = store.scene("c")
    assert (c.clock, c.placement.branch, c.placement.pos, c.placement.parent_id) == (3.0, "c", 0, "a")
    # the moved scene's appearances carry its new placement
    [app] = store.appearances(scene_id="c")
    assert (app.clock, app.branch, app.pos) == (3.0, "c", 0)
    # loading it again changes nothing
    again = store.load_story(Story(s.id, s.title, s.characters, s.environments, scenes, transitions))
    assert again.stale == {} and not any(again.changes[k] for k in ("scenes", "moved", "transitions", "added"))


def test_set_timeline_moves_scenes_and_their_appearances_in_one_go(store):
    from storygraph.timeline import place_scenes

    generated(store)
    new = [Transition("a", "b", "continuous"), Transition("b", "c", "cut", gap=3.0), Transition("a", "d", "cut")]
    placements = place_scenes(["a", "b", "c", "d"], new)
    marks = store.set_timeline(upsert=[TransitionRecord("a", "d", "cut", 2.0, 0.8)], placements={"d": placements["d"]},
                               changed={"d": Cause("d", "moved: now follows a")})
    assert marks == {"d": "moved: now follows a"}
    assert [(t.from_id, t.to_id) for t in store.transitions()] == [("a", "b"), ("a", "d"), ("b", "c")]
    assert store.scene("d").placement == placements["d"]
    assert [(a.clock, a.branch, a.pos) for a in store.appearances(scene_id="d")] == [(2.0, "d", 0)]
    store.set_timeline(delete=[("a", "d")])
    assert [(t.from_id, t.to_id) for t in store.transitions()] == [("a", "b"), ("b", "c")]


def test_deleting_scenes_takes_their_memory_with_them(store):
    generated(store)
    assert store.appearances(ids=["a#0#mara"])[0].uses == [("b", 0.7)]
    marks = store.delete_scenes(["b"])
    assert store.appearances(ids=["a#0#mara"])[0].uses == []  # b's use of it went with b
    assert marks == {"c": "upstream b: deleted"}
    assert [s.id for s in store.scenes()] == ["a", "c", "d"]
    assert {a.id for a in store.appearances(accepted_only=False)} == {"a#0#mara", "c#0#ivo", "d#0#ivo"}
    assert store._counts()["Take"] == 3
    assert [e.ref_id for e in store.events_since(0) if e.kind == "scene.deleted"] == ["b"]
    with pytest.raises(StoreError):
        store.delete_scenes(["nope"])


def test_scenes_left_generating_become_interrupted(store):
    generated(store)
    store.set_scene_status("c", "generating")
    assert store.mark_interrupted() == ["c"]
    assert store.scene("c").status == "interrupted" and "interrupted" in store.scene("c").notes
    assert store.mark_interrupted() == []


def test_absolute_media_paths_become_relative_to_the_story_folder(store):
    store.load_story(small_story())
    old = "/old/place/story"
    take = TakeRecord("a", 0, 1, "p", f"{old}/media/a/take-0/video.mp4", f"{old}/media/a/take-0/last.png",
                      f"{old}/media/a/take-0", Scores(identity=0.9))
    app = appearance("a#0#mara", "mara", "a", 0.0)
    app.frame_path = f"{old}/media/a/take-0/frame_0004.png"
    store.commit_take(SceneCommit(take, [app], []))
    store.commit_take(commit("b", 0, []))  # paths outside the media layout are left as they are
    assert store.migrate_media_paths("/new/place/story2") == 3
    a = store.scene("a")
    assert (a.video_path, a.last_frame_path, a.frames_dir) == (
        "media/a/take-0/video.mp4", "media/a/take-0/last.png", "media/a/take-0")
    assert store.takes("a")[0].video_path == "media/a/take-0/video.mp4"
    assert store.appearances(scene_id="a")[0].frame_path == "media/a/take-0/frame_0004.png"
    assert store.scene("b").video_path == "/m/b/0.mp4"
    assert store.migrate_media_paths("/new/place/story2") == 0


def test_one_story_per_embedded_folder_several_in_neo4j(store):
    store.load_story(small_story())
    other = Story("other", "Other", characters=(Character("mara", "Mara", "another Mara"),),
                  scenes=(SceneSpec("x", "waits", ("mara",)),))
    if store.multi_story:  # Neo4j keys everything on (story, id): a second story sharing an id lives beside it
        second = type(store)(store.uri, story_id="other")
        try:
            second.load_story(other)
            assert [c.description for c in second.characters()] == ["another Mara"]
        finally:
            second.close()
        assert sorted(s["id"] for s in store.stories()) == ["other", "tiny"]
    else:  # an embedded folder holds one story: a second one is refused before anything is written
        store.story_id = "other"  # as a store opened for the other story (`storygraph load other.yaml`) is
        try:
            with pytest.raises(StoreConflict, match="holds one story"):
                store.load_story(other)
        finally:
            store.story_id = "tiny"
        assert [s["id"] for s in store.stories()] == ["tiny"]
    assert store.characters()[1].description == "red coat"


def test_children(store):
    """A scene's children: the scenes its outgoing transitions lead to, in id order."""
    store.load_story(small_story())
    assert store.scene_children("b") == ["c", "d"] and store.scene_children("c") == []


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
        s = make_store(f"contract-{i}")
        test(s)
        s.close()  # each embedded database maps a large address range: hold one at a time
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
