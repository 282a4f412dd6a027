"""Placement and loading cost O(scenes + transitions), however deep the branching: a scene's lineage shares its
parent's links instead of copying them, the graph keeps no lineage at all (reads rebuild it from the branches'
first scenes), and loading writes in bounded batches without MERGE."""

from __future__ import annotations

import re

from storygraph.domain import SceneSpec, Story, Transition
from storygraph.graphdb import queries
from storygraph.graphdb.base import UNWIND_BATCH
from storygraph.graphdb.embedded import EmbeddedStore
from storygraph.timeline import place_scenes


def nested(depth: int, per_branch: int = 2) -> tuple[list[str], list[Transition]]:
    """``depth`` branches, each forking off the first scene of the one before, ``per_branch`` scenes each."""
    ids, transitions = [], []
    for b in range(depth + 1):
        names = [f"b{b}s{i}" for i in range(per_branch)]
        ids += names
        if b:
            transitions.append(Transition(f"b{b - 1}s0", names[0], "cut"))
        transitions += [Transition(a, c, "continuous") for a, c in zip(names, names[1:])]
    transitions.sort(key=lambda t: (t.from_id, t.kind != "continuous"))  # a scene's first transition continues
    return ids, transitions


def _links(placements) -> set:
    seen = set()
    for p in placements.values():
        link = p.lineage
        while link is not None and len(link) and id(link) not in seen:
            seen.add(id(link))
            link = link.parent
    return seen


def test_deep_branching_shares_lineage_links():
    ids, transitions = nested(3000)
    placements = place_scenes(ids, transitions)
    deepest = placements["b3000s1"]
    assert len(deepest.lineage) == 3000 and deepest.branch == "b3000s0"
    assert list(deepest.lineage)[:2] == [("b0s0", 0), ("b1s0", 0)]
    # one link per branch in the whole story: copying each scene's lineage would make ~4.5 million
    assert len(_links(placements)) == 3000
    # ancestry still answers in O(depth): the first scene of every branch is on the deepest timeline, their
    # second scenes (a sibling branch's continuation) are not
    assert all(deepest.has_ancestor(f"b{b}s0", 0) for b in range(3000))
    assert not any(deepest.has_ancestor(f"b{b}s0", 1) for b in range(3000))


def _story(ids, transitions) -> Story:
    return Story("deep", "Deep", scenes=tuple(SceneSpec(id=i, action=f"step {i}") for i in ids),
                 transitions=tuple(transitions))


def test_the_graph_holds_no_lineage_and_reads_it_back(tmp_path):
    schema = queries.load("schema", "ladybug")
    assert "lineage" not in schema and "lineage" not in queries.load("scenes_upsert", "ladybug")
    ids, transitions = nested(60)
    want = place_scenes(ids, transitions)
    store = EmbeddedStore(tmp_path / "story")
    try:
        store.load_story(_story(ids, transitions))
        got = {s.id: s.placement for s in store.scenes()}
        assert got == want  # lineage included, element by element
        for sid in ("b60s1", "b31s0", "b0s1"):  # one at a time: walked up through the branches' first scenes
            assert store.scene(sid).placement == want[sid]
        ctx = store.scene_context("b60s0")
        assert ctx.scene.placement == want["b60s0"] and ctx.parent.placement == want["b59s0"]
    finally:
        store.close()


def test_loading_writes_in_batches_without_merge(tmp_path):
    """LadybugDB's MERGE grows slower with the table and a list parameter costs tens of kilobytes a row: node
    upserts create and update instead, and no UNWIND list is longer than UNWIND_BATCH."""
    for name in ("scenes", "characters", "environments"):
        for dialect in queries.DIALECTS:
            for kind in ("create", "upsert"):
                assert "MERGE" not in queries.load(f"{name}_{kind}", dialect), (name, kind, dialect)
    ids = [f"s{i}" for i in range(2500)]
    transitions = [Transition(a, b, "continuous") for a, b in zip(ids, ids[1:])]
    store = EmbeddedStore(tmp_path / "story")
    sizes: list[int] = []
    execute = store._execute

    def recording(cypher, params=None):
        for key in ("rows", "ids"):
            if params and isinstance(params.get(key), list) and re.match(r"\s*UNWIND", cypher):
                sizes.append(len(params[key]))
        return execute(cypher, params)

    store._execute = recording
    try:
        store.load_story(_story(ids, transitions))
        store.load_story(_story(ids, transitions))  # again: every row an update
        assert store.scene("s2499").clock == 2499.0 and len(store.ids("scene")) == 2500
    finally:
        store.close()
    assert sizes and max(sizes) == UNWIND_BATCH and sum(1 for n in sizes if n == UNWIND_BATCH) >= 10
