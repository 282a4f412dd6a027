"""Runs through the engine with the tiny random-weight models: what a selection makes, progress and the time left,
cancel between denoising steps (nothing half-written, the scene as it was), deleting scenes and transitions,
attaching uploaded references, and cutting a timeline into one film.

Expected answers come from the story (its transitions and placements), from the files on disk and from Cypher
over the graph, never from the function under test.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from support import SHORT_SCENES, SHORT_TRANSITIONS, commit_take
from storygraph.engine.runs import Cancelled, RunControl, Selection, SelectionError, scenes_to_run, timeline_of

pytestmark = pytest.mark.slow

#: s01 -> s02 (continuous) on the main timeline; s01 -> s03 -> s04 on a branch named after s03.
BRANCHY = (("s01-arrival", "s02-package", "s03-keeper", "s04-meeting"),
           (("s01-arrival", "s02-package", "continuous", None), ("s01-arrival", "s03-keeper", "cut", None),
            ("s03-keeper", "s04-meeting", "cut", None)))
SHORT = (SHORT_SCENES, SHORT_TRANSITIONS)


def media_of(engine, scene_id):
    d = engine.dir / "media" / scene_id
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# -- selections -----------------------------------------------------------------------------------------------


def test_selections_name_the_scenes_they_make(make_engine):
    e = make_engine(BRANCHY)
    scenes = e.store.scenes()
    assert [s.id for s in timeline_of(scenes, "s03-keeper")] == ["s01-arrival", "s03-keeper", "s04-meeting"]
    assert [s.id for s in timeline_of(scenes, "s01-arrival")] == ["s01-arrival", "s02-package"]
    assert [s.id for s in scenes_to_run(scenes, Selection("all"))] == [s.id for s in scenes]
    assert scenes_to_run(scenes, Selection("stale")) == []
    with pytest.raises(SelectionError):
        timeline_of(scenes, "nowhere")
    with pytest.raises(SelectionError):
        Selection("branch")
    with pytest.raises(SelectionError):
        Selection("everything")


def test_a_timeline_run_makes_its_scenes_and_the_ones_it_follows_only(make_engine):
    e = make_engine(BRANCHY)
    states = []
    out = e.run_selection(Selection("branch", "s03-keeper"), on_progress=lambda st: states.append(
        (st.scene, st.stage, st.step, st.steps, st.eta_s, list(st.done))))
    assert out.done == ["s01-arrival", "s03-keeper", "s04-meeting"]
    assert {s.id: s.status for s in e.store.scenes()} == {
        "s01-arrival": "done", "s02-package": "planned", "s03-keeper": "done", "s04-meeting": "done"}
    steps = e.store.scene("s01-arrival").spec.steps
    # every denoising step was reported, per scene, counting up to the scene's steps
    for sid in out.done:
        seen = [st[2] for st in states if st[0] == sid and st[1] == "generate" and st[2] > 0]
        assert seen == list(range(1, steps + 1)), (sid, seen)
    # an estimate of the time left from the first step on, none before it, and none left at the end
    first_step = next(i for i, st in enumerate(states) if st[2] > 0)
    assert all(st[4] is None for st in states[:first_step])
    assert all(st[4] is not None for st in states[first_step:])
    assert states[-1][4] == 0 and states[-1][5] == out.done


def test_cancel_between_denoising_steps_leaves_nothing_half_written(make_engine, tiny_runtime):
    e = make_engine(SHORT)
    e.run(until="s01-arrival")
    control = RunControl()
    steps = []

    def on_step(i):  # cancel after the second scene's first denoising step
        if e.store.scene("s02-package").status == "generating":
            steps.append(i)
            control.cancel()

    gen = tiny_runtime["generator"]
    before = gen.on_step
    gen.on_step = on_step
    try:
        with pytest.raises(Cancelled):
            e.run_selection(Selection("all"), control=control)
    finally:
        gen.on_step = before
    assert steps == [0]
    s02 = e.store.scene("s02-package")
    assert s02.status == "planned" and s02.takes == 0 and "cancelled" in s02.notes
    assert media_of(e, "s02-package") == []
    rows = e.store.query("MATCH (t:Take) WHERE t.scene_id = 's02-package' RETURN count(t) AS n", {}).rows
    assert rows == [[0]]
    rows = e.store.query("MATCH (a:Appearance) WHERE a.scene_id = 's02-package' RETURN count(a) AS n", {}).rows
    assert rows == [[0]]
    assert e.store.scene("s01-arrival").status == "done"
    # and the next run finishes the story
    e.run()
    assert {s.status for s in e.store.scenes()} == {"done"}


def test_cancelling_more_takes_of_a_done_scene_keeps_its_chosen_take(make_engine, tiny_runtime):
    e = make_engine(BRANCHY)
    e.generate("s01-arrival")
    chosen = e.store.scene("s01-arrival")
    control = RunControl()
    gen = tiny_runtime["generator"]
    calls = []

    def on_step(i):
        calls.append(i)
        if len(calls) == 3:  # the second new take's first step: the first new take is on disk, not committed
            control.cancel()

    before, gen.on_step = gen.on_step, on_step
    try:
        with pytest.raises(Cancelled):
            e.generate("s01-arrival", takes=2, control=control)
    finally:
        gen.on_step = before
    after = e.store.scene("s01-arrival")
    assert after.status == "done" and after.chosen_take == chosen.chosen_take and after.video_path == chosen.video_path
    assert [t.take for t in e.store.takes("s01-arrival")] == [0]
    assert media_of(e, "s01-arrival") == ["take-0"]


def test_a_cancel_from_another_thread_stops_the_run(make_engine, tiny_runtime):
    e = make_engine(BRANCHY)
    control = RunControl()
    started = threading.Event()
    gen = tiny_runtime["generator"]
    before = gen.on_step

    def on_step(i):
        started.set()
        control._cancel.wait(30)  # hold the step until the other thread cancelled

    gen.on_step = on_step
    try:
        t = threading.Thread(target=lambda: (started.wait(60), control.cancel()))
        t.start()
        with pytest.raises(Cancelled):
            e.run(control=control)
        t.join(5)
    finally:
        gen.on_step = before
    assert [s.status for s in e.store.scenes()] == ["planned"] * 4
    assert not any((e.dir / "media").glob("*/take-*"))


# -- deleting -------------------------------------------------------------------------------------------------


def test_deleting_a_scene_removes_its_takes_memories_and_media_and_frees_what_follows(make_engine):
    from storygraph.engine.errors import SceneHasChildren

    e = make_engine(BRANCHY)
    e.run_selection(Selection("branch", "s03-keeper"))
    apps = {a.id for a in e.store.appearances(scene_id="s03-keeper", accepted_only=False)}
    assert apps
    with pytest.raises(SceneHasChildren) as refused:  # s04 was made from s03
        e.delete_scene("s03-keeper")
    assert "s04-meeting" in str(refused.value)
    assert e.store.scene("s03-keeper") is not None and media_of(e, "s03-keeper") == ["take-0"]
    e.delete_scene("s04-meeting")
    e.delete_scene("s03-keeper")
    assert e.store.scene("s03-keeper") is None and media_of(e, "s03-keeper") == []
    q = e.store.query("MATCH (a:Appearance) WHERE a.scene_id = 's03-keeper' RETURN count(a) AS n", {}).rows
    assert q == [[0]]
    q = e.store.query("MATCH (t:Take) WHERE t.scene_id = 's03-keeper' RETURN count(t) AS n", {}).rows
    assert q == [[0]]
    for space in ("clip", "dino"):  # the vector index no longer holds its memories, here or on disk
        assert not e.indexes()[space].ids() & apps
    from storygraph.engine.vectors import VectorIndex

    assert not VectorIndex.open(e.dir / "vectors", "dino").ids() & apps
    assert sorted(s.id for s in e.store.scenes()) == ["s01-arrival", "s02-package"]
    assert [(t.from_id, t.to_id) for t in e.store.transitions()] == [("s01-arrival", "s02-package")]


def test_deleting_a_planned_scene_makes_its_children_timelines_of_their_own(make_engine):
    e = make_engine(BRANCHY)
    e.delete_scene("s03-keeper")
    s04 = e.store.scene("s04-meeting")
    assert (s04.placement.parent_id, s04.placement.branch, s04.placement.pos, s04.clock) == (None, "s04-meeting", 0, 0)
    assert e.store.scene("s02-package").placement.branch == "s01-arrival"  # the rest keeps its placement


def test_deleting_a_transition_frees_a_planned_child_and_makes_a_generated_one_stale(make_engine):
    e = make_engine(BRANCHY)
    e.run(until="s02-package")
    e.delete_transition("s01-arrival", "s03-keeper")
    assert ("s01-arrival", "s03-keeper") not in {(t.from_id, t.to_id) for t in e.store.transitions()}
    s03, s04 = e.store.scene("s03-keeper"), e.store.scene("s04-meeting")
    assert s03.placement.parent_id is None and s03.placement.branch == "s03-keeper" and s03.clock == 0
    assert s04.placement.parent_id == "s03-keeper" and s04.clock == pytest.approx(2.0)  # a cut's default gap
    assert s03.status == "planned" and s04.status == "planned"  # nothing made: nothing stale
    e.delete_transition("s01-arrival", "s02-package")  # s02 was made as s01's extension: it keeps its media, stale
    s02 = e.store.scene("s02-package")
    assert s02.placement.parent_id is None and s02.status == "stale"
    assert "detached from s01-arrival" in s02.stale_reason and media_of(e, "s02-package") == ["take-0"]


def test_a_scene_with_a_generated_scene_after_it_is_deleted_only_with_cascade(make_engine):
    from storygraph.domain import ConditionRecord
    from storygraph.engine.errors import SceneHasChildren

    e = make_engine(BRANCHY)
    commit_take(e.store, "s01-arrival")
    app = e.store.appearances(scene_id="s01-arrival")[0]
    commit_take(e.store, "s03-keeper", conditioned_on=[ConditionRecord("keyframe", "Appearance", app.id, 0, 0.6, 0.5, "")])
    with pytest.raises(SceneHasChildren) as refused:
        e.delete_scene("s01-arrival")
    assert "s03-keeper" in str(refused.value) and e.store.scene("s03-keeper") is not None
    gone = e.delete_scene("s01-arrival", cascade=True)
    assert gone[0] == "s01-arrival" and "s03-keeper" in gone
    assert e.store.scene("s01-arrival") is None and e.store.scene("s03-keeper") is None


# -- references -----------------------------------------------------------------------------------------------


def _png_bytes(color=(10, 200, 30), size=(40, 24)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_an_uploaded_reference_is_kept_as_png_and_conditions_the_scene(make_engine):
    from storygraph.engine.media import load_image
    from storygraph.engine.references import ReferenceImageError

    e = make_engine(BRANCHY)
    path = e.add_reference_image(_png_bytes())
    assert path.startswith(str(e.dir / "media" / "references")) and path.endswith(".png")
    assert (load_image(path) == np.array([10, 200, 30], dtype=np.uint8)).all()
    assert e.add_reference_image(_png_bytes()) == path  # the same pixels, the same file
    for bad in (b"", b"GIF89a not really", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "x".encode() * 100):
        with pytest.raises(ReferenceImageError):
            e.add_reference_image(bad)
    e.set_scene_reference("s01-arrival", "costume", path, character="mara", strength=0.8)
    with pytest.raises(Exception):
        e.set_scene_reference("s01-arrival", "costume", path, character="tomas")  # not in the scene
    with pytest.raises(Exception):
        e.set_scene_reference("s01-arrival", "place", "/etc/hostname")  # not an uploaded image
    e.generate("s01-arrival")
    used = [c for c in e.store.conditioned_on("s01-arrival") if c.target_kind == "Reference"]
    assert [(c.role, c.target_id, c.strength) for c in used] == [("reference", path, pytest.approx(0.8))]
    # replacing it: the new image, once; removing it: none
    other = e.add_reference_image(_png_bytes((200, 0, 0)))
    e.set_scene_reference("s01-arrival", "costume", other, character="mara")
    assert [r.path for r in e.store.scene("s01-arrival").spec.references] == [other]
    s01 = e.store.scene("s01-arrival")
    assert s01.status == "stale" and "references" in s01.stale_reason  # made from the old image: kept until remade
    e.set_scene_reference("s01-arrival", "costume", None, character="mara")
    assert e.store.scene("s01-arrival").spec.references == ()
    e.set_character_reference("mara", other)
    assert next(c for c in e.store.characters() if c.id == "mara").reference_path == other


# -- a timeline as one film -----------------------------------------------------------------------------------


def test_a_cut_holds_every_chosen_take_in_story_order_with_sound(make_engine, tmp_path):
    from storygraph.engine.cut import write_cut
    from storygraph.engine.media import read_video, video_info

    e = make_engine(BRANCHY)
    e.run()
    e.generate("s03-keeper", takes=1)  # a second take; the chosen one is what the cut shows
    out = write_cut(e.store, tmp_path / "branch.mp4", "s03-keeper")
    ids = ["s01-arrival", "s03-keeper", "s04-meeting"]
    assert [s.scene_id for s in out.scenes] == ids
    specs = [e.store.scene(i).spec for i in ids]
    frames, fps = read_video(tmp_path / "branch.mp4")
    assert len(frames) == sum(s.frames for s in specs) and fps == pytest.approx(specs[0].fps)
    info = video_info(tmp_path / "branch.mp4")
    assert info["audio"] is not None
    total = sum(s.frames / s.fps for s in specs)
    assert info["audio"]["samples"] / info["audio"]["sample_rate"] == pytest.approx(total, abs=0.05)
    start = 0
    for sid, spec in zip(ids, specs):
        own, _ = read_video(e.dir / e.store.scene(sid).video_path)
        assert np.mean((frames[start].astype(float) - own[0].astype(float)) ** 2) < 200, sid
        start += spec.frames
    # a stale scene plays its take until it is made again; the main timeline stops where a scene is not made
    e.update_scene("s02-package", lighting="another light")
    assert e.store.scene("s02-package").status == "stale"
    main = write_cut(e.store, tmp_path / "main.mp4")
    assert [s.scene_id for s in main.scenes][:2] == ["s01-arrival", "s02-package"]
    e.store.set_scene_status("s02-package", "planned")
    main = write_cut(e.store, tmp_path / "main.mp4")
    assert [s.scene_id for s in main.scenes] == ["s01-arrival"] and main.stopped_at == "s02-package"
