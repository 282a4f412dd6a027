"""Crash tests: ``storygraph run`` killed with SIGKILL at each boundary of the per-scene loop, then
``storygraph resume`` finishes the story with no scene missing or made twice and the vector index on disk
matching the graph. The scene the killed process was generating is ``interrupted`` once the story is opened.

Each run is killed while working on the third scene of four, so the crash lands between committed scenes
and scenes still to make; with two takes per scene, it also lands between the takes of one scene.

Takes' media are written in the background and a scene is committed once they are on disk, while the next
scene generates (storygraph.engine.writer). So a crash while media are being written (during_media, after_media)
must find no committed take without its files, and before the third scene's generation the second scene is still
in flight: generated, not yet committed.
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from support import graph_accepted_ids, storygraph_cli, write_story_yaml

pytestmark = pytest.mark.slow

SCENES = ("s01-arrival", "s02-package", "s04-meeting", "s06-escape")
TRANSITIONS = (
    ("s01-arrival", "s02-package", "continuous", None),
    ("s02-package", "s04-meeting", "cut", None),
    ("s04-meeting", "s06-escape", "time_skip", 12.0),
)
CRASH_SCENE = SCENES[2]

# point -> (takes per scene, passes to let by, scenes done when it fires, takes of the third scene in the graph
# when it fires). Per scene the engine passes before_generate and after_generate once per take, commits each
# take once (during_commit; the chosen take last) and passes after_commit once.
CASES = {
    "before_generate": (1, 2, 1, 0),  # third scene, before its take is generated; the second is in flight
    "after_generate": (1, 2, 2, 0),  # third scene, its take generated (the second now committed), not committed
    "during_media": (1, 2, 2, 0),  # third scene's media half written (the video, not its last frames)
    "after_media": (1, 2, 2, 0),  # third scene's media written, the scene not yet committed
    "during_commit": (2, 5, 2, 1),  # third scene, inside the transaction of its second commit
    "after_commit": (1, 2, 3, 1),  # third scene committed; the index not yet updated
}


@pytest.fixture(scope="module")
def story_file(tmp_path_factory):
    return write_story_yaml(tmp_path_factory.mktemp("crash-story") / "story.yaml", SCENES, TRANSITIONS,
                            width=64, height=64, frames=9, steps=2)


def _store(d):
    from storygraph.graphdb import open_store

    return open_store(d, create=False)


def _index_ids_on_disk(d) -> dict:
    """What the saved vector index files hold, read without reconciling with the graph."""
    from storygraph.engine.vectors import VectorIndex

    return {space: set(VectorIndex.open(d / "vectors", space, device="cpu").ids()) for space in ("clip", "dino")}


def _ids(store, label: str) -> list[str]:
    return [r[0] for r in store.query(f"MATCH (n:{label}) RETURN n.id", {}, read_only=True).rows]


@pytest.mark.parametrize("point", list(CASES))
def test_killed_run_resumes_to_a_complete_consistent_story(point, story_file, tiny_config, tmp_path):
    takes, skip, done_at_crash, takes_at_crash = CASES[point]
    d = tmp_path / "story"
    d.mkdir()
    tiny_config.with_overrides(engine={"takes": takes}).save(d)

    crashed = storygraph_cli("run", story_file, "--dir", d,
                             env_extra={"STORYGRAPH_CRASH_AT": point, "STORYGRAPH_CRASH_SKIP": str(skip)})
    assert crashed.returncode == -signal.SIGKILL, (
        f"expected death by SIGKILL at {point}; rc {crashed.returncode}\n{crashed.stdout[-2000:]}\n"
        f"{crashed.stderr[-3000:]}")

    # the crash happened where it was meant to: mid-story, on the third scene
    store = _store(d)
    try:
        status = {s.id: s.status for s in store.scenes()}
        committed = graph_accepted_ids(store)
        crash_scene_takes = store.takes(CRASH_SCENE)
        crash_scene_apps = {a.id for a in store.appearances(scene_id=CRASH_SCENE, accepted_only=True,
                                                            with_vectors=False)}
    finally:
        store.close()
    assert [status[s] for s in SCENES[:done_at_crash]] == ["done"] * done_at_crash
    assert all(status[s] != "done" for s in SCENES[done_at_crash:]), status
    if done_at_crash == 2:  # the killed process was on the third scene: opening the story says so
        assert status[CRASH_SCENE] == "interrupted", status
    assert len(crash_scene_takes) == takes_at_crash, [t.take for t in crash_scene_takes]
    assert_committed_takes_have_files(d)
    crash_take = d / "media" / CRASH_SCENE / "take-0"
    if point == "during_media":  # the crash did land mid-write: the video is there, its last frames are not
        assert (crash_take / "video.mp4").is_file() and not (crash_take / "last.png").exists()
    if point == "after_media":
        assert (crash_take / "last.png").is_file()

    if point == "after_commit":
        # the graph has the third scene, the index files do not yet ...
        assert crash_scene_apps, "the committed scene has no accepted appearances"
        on_disk = _index_ids_on_disk(d)
        for space, ids in on_disk.items():
            assert not (crash_scene_apps & ids), f"{space} index already holds the uncommitted-to-index scene"
            assert ids < committed, f"{space}: index {sorted(ids)} vs graph {sorted(committed)}"
        # ... and opening the engine reconciles them in (on a copy, so resume below starts from the crash)
        copy = tmp_path / "opened"
        shutil.copytree(d, copy)
        from storygraph.config import Config
        from storygraph.engine.engine import StoryEngine

        engine = StoryEngine.open(copy, config=Config.load(copy))
        try:
            for space, idx in engine.indexes().items():
                assert set(idx.ids()) == committed, space
        finally:
            engine.close()
        for space, ids in _index_ids_on_disk(copy).items():
            assert ids == committed, f"{space}: the reconciled index was not saved on close"

    resumed = storygraph_cli("resume", d)
    assert resumed.returncode == 0, f"{resumed.stdout[-2000:]}\n{resumed.stderr[-3000:]}"

    store = _store(d)
    try:
        scenes = {s.id: s for s in store.scenes()}
        assert sorted(scenes) == sorted(SCENES)
        assert {s.id: s.status for s in scenes.values()} == {s: "done" for s in SCENES}

        take_ids, app_ids = _ids(store, "Take"), _ids(store, "Appearance")
        assert [i for i, n in Counter(take_ids).items() if n > 1] == []
        assert [i for i, n in Counter(app_ids).items() if n > 1] == []

        for sid, scene in scenes.items():
            made = store.takes(sid)
            assert sorted(t.take for t in made) == list(range(takes)), (sid, [t.take for t in made])
            assert len({t.seed for t in made}) == takes, sid
            chosen = [t for t in made if t.chosen]
            assert len(chosen) == 1, (sid, [(t.take, t.chosen) for t in made])
            assert scene.chosen_take == chosen[0].take
            assert scene.video_path == chosen[0].video_path
            apps = store.appearances(scene_id=sid, accepted_only=False, with_vectors=False)
            assert apps, sid
            assert {a.take for a in apps} == set(range(takes)), sid
            for a in apps:
                assert a.accepted == (a.take == chosen[0].take), (sid, a.id, a.take, a.accepted)
            # one appearance per character per take
            assert Counter((a.character_id, a.take) for a in apps) == Counter(
                (c, t) for c in scene.spec.characters for t in range(takes)), sid

        accepted = graph_accepted_ids(store)
        assert accepted == {k for k, _ in store.appearance_keys()}
    finally:
        store.close()

    on_disk = _index_ids_on_disk(d)
    for space, ids in on_disk.items():
        assert ids == accepted, (f"{space} index on disk: missing {sorted(accepted - ids)}, "
                                 f"extra {sorted(ids - accepted)}")
    assert_committed_takes_have_files(d, expect=len(SCENES) * takes)


def assert_committed_takes_have_files(d, expect: int = 0) -> None:
    """Every take in the graph has its video (a readable one, with every frame), last.png and last frames; at
    least ``expect`` takes are checked."""
    from storygraph.engine.media import video_info

    store = _store(d)
    try:
        takes = [t for s in store.scenes() for t in store.takes(s.id)]
    finally:
        store.close()
    assert len(takes) >= expect
    for t in takes:
        assert not Path(t.video_path).is_absolute(), t.video_path  # stored relative to the story folder
        video, last = d / t.video_path, d / t.last_frame_path
        assert video.is_file() and last.is_file(), (t.scene_id, t.take, t.video_path)
        assert video_info(video)["frames"] == 9, (t.scene_id, t.take)
        assert len(list((last.parent / "last_frames").glob("*.png"))) == 9, (t.scene_id, t.take)
