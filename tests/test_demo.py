"""``storygraph demo``: the example story end to end in a subprocess (tiny random-weight models, embedded graph),
then the graph it leaves is checked: every scene done with its mp4 and scores, provenance on every scene after
the first with the memory mode on every edge, continuous transitions conditioned on their parent scene, cuts
conditioned on memory placed before the clip, the stand-in reference images used from each character's first
scene; and the demo with each LTX-2 version.
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
        all_edges = store.query("MATCH (c:Scene)-[r:CONDITIONED_ON]->(t) RETURN c.id, r.role, r.mode, r.frame_index",
                                {}, read_only=True).rows
        transitions = store.transitions()
        characters = store.characters()
    finally:
        store.close()
    return {"scenes": scenes, "provenance": provenance, "scene_edges": edges, "transitions": transitions,
            "all_edges": all_edges, "characters": characters, "dir": d}


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
        assert not Path(s.video_path).is_absolute(), sid  # relative to the story folder, which can move
        video = graph["dir"] / s.video_path
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
        assert ext[0].reason == f"continuous from {t.from_id}: its last 9 frames at index 0, strength 1.0"
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


def test_every_conditioned_on_edge_records_its_memory_mode(graph):
    from storygraph.domain import MEMORY_MODES

    assert graph["all_edges"]
    assert [e for e in graph["all_edges"] if e[2] not in MEMORY_MODES] == []
    # the extension is the only thing in the clip: without an IC-LoRA or explicit references, nothing is a keyframe
    assert {e[2] for e in graph["all_edges"]} == {"extend", "context"}
    assert all((e[1] == "extension") == (e[2] == "extend") for e in graph["all_edges"])


def test_cuts_condition_on_memory_placed_before_the_clip(graph):
    """A cut is a new shot: its memory goes in as context tokens at negative time ([-8k, -8k + 1)), never as
    pixels the shot opens on."""
    cuts = [t for t in graph["transitions"] if t.kind in ("cut", "time_skip")]
    assert len(cuts) >= 5
    for t in cuts:
        records = graph["provenance"][t.to_id]
        assert records, t.to_id
        for r in records:
            assert r.mode == "context", (t.to_id, r)
            assert r.frame_index < 0 and r.frame_index % 8 == 0, (t.to_id, r)
        # distinct slots, the nearest first
        slots = sorted(-r.frame_index // 8 for r in records)
        assert slots == list(range(1, len(records) + 1)), (t.to_id, slots)


def _first_scenes(scenes: dict, character: str) -> list:
    """Scenes showing ``character`` whose timeline never showed it before."""
    out = []
    for sid, s in scenes.items():
        if character not in s.spec.characters:
            continue
        pid, seen = s.placement.parent_id, False
        while pid is not None:
            if character in scenes[pid].spec.characters:
                seen = True
                break
            pid = scenes[pid].placement.parent_id
        if not seen:
            out.append(sid)
    return out


def test_a_characters_reference_image_is_memory_from_its_first_scene(demo, graph):
    from storygraph.engine.demo import STAND_INS

    d, _ = demo
    with_refs = {c.id: c.reference_path for c in graph["characters"] if c.reference_path}
    assert sorted(with_refs) == sorted(STAND_INS)
    for cid, path in with_refs.items():
        assert path == str((d / "refs" / f"{cid}.png").resolve())
        firsts = _first_scenes(graph["scenes"], cid)
        assert firsts, cid
        for sid in firsts:
            refs = [r for r in graph["provenance"][sid] if r.target_kind == "Reference"]
            assert [(r.role, r.target_id, r.mode) for r in refs] == [("memory", path, "context")], (sid, refs)
            assert refs[0].frame_index < 0
    # a character without a reference image has nothing to go on in its first scene
    for sid in _first_scenes(graph["scenes"], "ines"):
        assert not [r for r in graph["provenance"][sid] if r.target_kind == "Reference"]


def test_models_check_names_the_demos_ltx_version(demo):
    d, _ = demo
    r = storygraph_cli("models", "check", "--dir", d, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if "ltx2" in line)
    assert "LTX-2.3" in row


@pytest.mark.parametrize("version", ["2.0", "2.5"])
def test_the_demo_runs_with_each_ltx_version(tmp_path, version):
    d = tmp_path / f"demo-{version}"
    r = storygraph_cli("demo", "--dir", d, "--ltx-version", version, "--until", "s03-keeper", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 done" in " ".join(r.stdout.split())
    check = storygraph_cli("models", "check", "--dir", d, timeout=120)
    row = next(line for line in check.stdout.splitlines() if "ltx2" in line)
    assert f"LTX-{version}" in row and check.returncode == 0
    from storygraph.graphdb import open_store

    store = open_store(d, create=False)
    try:
        modes = {(sid, r.role, r.mode) for sid in ("s01-arrival", "s02-package", "s03-keeper")
                 for r in store.conditioned_on(sid)}
    finally:
        store.close()
    assert modes == {("s01-arrival", "memory", "context"), ("s02-package", "extension", "extend"),
                     ("s03-keeper", "memory", "context")}


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
