"""``storygraph demo``: the example story end to end in a subprocess (tiny random-weight models, embedded graph),
then the graph it leaves is checked: every scene done with its mp4 and scores, provenance on every scene after
the first, continuous transitions conditioned on their parent scene.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from support import EXAMPLE, storygraph_cli

pytestmark = pytest.mark.slow

SCORES = ("identity", "text_alignment", "subject_consistency", "background_consistency")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "story"
    result = storygraph_cli("demo", d, timeout=300)
    return d, result


@pytest.fixture(scope="module")
def graph(demo):
    """What the demo's graph holds, read after the demo process exited."""
    from storygraph.graphdb import open_store

    d, result = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    store = open_store(d, create=False)
    try:
        scenes = {s.id: s for s in store.scenes()}
        provenance = {sid: store.conditioned_on(sid) for sid in scenes}
        edges = store.query(
            "MATCH (c:Scene)-[r:CONDITIONED_ON]->(p:Scene) RETURN c.id, p.id, r.role, r.take, c.chosen_take",
            {}, read_only=True).rows
        transitions = store.transitions()
    finally:
        store.close()
    return {"scenes": scenes, "provenance": provenance, "scene_edges": edges, "transitions": transitions}


@pytest.fixture(scope="module")
def example():
    from storygraph.storyfile import load_story

    return load_story(EXAMPLE)


def test_demo_exits_0_and_says_it_is_a_smoke_run(demo, example):
    from storygraph.engine.demo import SMOKE_NOTE

    d, result = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = " ".join(result.stdout.split())
    assert " ".join(SMOKE_NOTE.split()) in out
    n = len(example.scenes)
    assert f"{n} scenes: {n} done" in out
    assert (d / "report" / "report.html").is_file()


def test_every_scene_is_done_with_an_mp4_and_scores(graph, example):
    scenes = graph["scenes"]
    assert sorted(scenes) == sorted(s.id for s in example.scenes)
    for sid, s in scenes.items():
        assert s.status == "done", (sid, s.status, s.notes)
        assert s.video_path and s.video_path.endswith(".mp4"), sid
        video = Path(s.video_path)
        assert video.is_file(), sid
        assert video.read_bytes()[4:8] == b"ftyp", f"{sid}: {video} is not an MP4 file"
        for name in SCORES:
            v = getattr(s.scores, name)
            assert v is not None and math.isfinite(v), (sid, name, v)


def test_the_graph_keeps_the_story_files_transitions(graph, example):
    got = sorted((t.from_id, t.to_id, t.kind) for t in graph["transitions"])
    assert got == sorted((t.from_id, t.to_id, t.kind) for t in example.transitions)


def test_every_scene_after_the_first_is_conditioned_on_something(graph):
    """Must show: CONDITIONED_ON edges on every scene after the first."""
    missing = [sid for sid, s in graph["scenes"].items()
               if s.placement.parent_id is not None and not graph["provenance"][sid]]
    assert missing == [], f"scenes with a parent but no CONDITIONED_ON edge: {missing}"


def test_continuous_transitions_extend_their_parent(graph):
    continuous = [t for t in graph["transitions"] if t.kind == "continuous"]
    assert continuous
    for t in continuous:
        records = graph["provenance"][t.to_id]
        ext = [r for r in records if r.role == "extension"]
        assert len(ext) == 1, (t.to_id, records)
        assert (ext[0].target_kind, ext[0].target_id, ext[0].frame_index) == ("Scene", t.from_id, 0)
        # and the edge in the graph is the chosen take's
        rows = [r for r in graph["scene_edges"] if r[0] == t.to_id and r[1] == t.from_id]
        assert [(r[2], r[3]) for r in rows] == [("extension", graph["scenes"][t.to_id].chosen_take)]
    # nothing but continuous transitions extends a scene
    extended = {r[0] for r in graph["scene_edges"] if r[2] == "extension"}
    assert extended == {t.to_id for t in continuous}


def test_demo_refuses_a_non_empty_folder(tmp_path):
    d = tmp_path / "taken"
    d.mkdir()
    (d / "keep.txt").write_text("mine", encoding="utf-8")
    r = storygraph_cli("demo", d, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--overwrite" in r.stderr
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt"]
    assert (d / "keep.txt").read_text(encoding="utf-8") == "mine"
