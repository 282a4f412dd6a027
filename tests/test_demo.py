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


# -- a user's own story, quiet runs, the cut ---------------------------------------------------------------------


def test_demo_runs_a_users_story_at_a_size_the_rules_take(tmp_path):
    """A story file at a real size (768x512, 121 frames, 8 steps) is made at the demo size, which the story file
    rules accept too (the size they would refuse is never used)."""
    from storygraph.domain import generation_settings
    from storygraph.engine.demo import DEMO_DEFAULTS
    from storygraph.graphdb import open_store

    from support import write_story_yaml

    mine = write_story_yaml(tmp_path / "mine.yaml", width=768, height=512, frames=121, steps=8, story_id="mine")
    assert storygraph_cli("validate", mine).returncode == 0
    d = tmp_path / "smoke"
    r = storygraph_cli("demo", "--story", mine, "--dir", d, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "5 scenes: 5 done" in " ".join(r.stdout.split())
    store = open_store(d, create=False)
    try:
        scenes = store.scenes()
    finally:
        store.close()
    assert len(scenes) == 5
    rules = {name: s for name, _, s in generation_settings()}
    for s in scenes:
        for name in ("width", "height", "frames", "steps", "fps"):
            value = getattr(s.spec, name)
            assert value == getattr(DEMO_DEFAULTS, name), (s.id, name, value)
            assert rules[name].allows(value), (s.id, name, value)
        assert s.status == "done"


def test_run_tiny_is_quiet_and_v_shows_the_libraries(tmp_path):
    from support import SHORT_SCENES, write_story_yaml

    story = write_story_yaml(tmp_path / "two.yaml", SHORT_SCENES[:2], (("s01-arrival", "s02-package", "continuous", None),),
                             story_id="two")
    quiet = storygraph_cli("run", story, "--dir", tmp_path / "q", "--tiny", timeout=600)
    assert quiet.returncode == 0, quiet.stdout[-3000:] + quiet.stderr[-3000:]
    assert "2 scenes: 2 done" in " ".join(quiet.stdout.split())
    for noise in ("Loading", "it/s", "Warning", "warn("):
        assert noise not in quiet.stderr and noise not in quiet.stdout, noise
    loud = storygraph_cli("run", story, "--dir", tmp_path / "v", "--tiny", "-v", timeout=600)
    assert loud.returncode == 0
    assert "Loading" in loud.stderr  # the libraries' loading bars, left as they are
    # the same story as one film: the frames of both scenes
    from storygraph.engine.media import video_info

    cut = storygraph_cli("cut", tmp_path / "two.mp4", "--dir", tmp_path / "q", timeout=120)
    assert cut.returncode == 0, cut.stderr
    assert video_info(tmp_path / "two.mp4")["frames"] == 2 * 9
    again = storygraph_cli("cut", tmp_path / "x.mp4", "--dir", tmp_path / "q", "--branch", "nowhere", timeout=120)
    assert again.returncode == 2 and "nowhere" in again.stderr and not (tmp_path / "x.mp4").exists()
