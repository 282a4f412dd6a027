"""A disk that fills up (or a folder that cannot be written) in the middle of ``storygraph run``: one clear line and
exit 1, a story that is consistent as it stands (no half-written file under its real name, nothing in the vector
index the graph lacks, every scene the graph calls done whole on disk), and ``storygraph resume`` completes it
once the disk can be written again, making no take twice.

The disk is filled through the write points of ``storygraph/faults.py``: every file write storygraph makes (media,
vector index, graph commit) passes one, and ``STORYGRAPH_FULL_FROM=<path>`` (or ``STORYGRAPH_FULL_AFTER=n``,
counting the writes of one kind) fails every write from there on with the ``OSError`` a full file system raises.
Where to fail is read off a clean run's log of its writes, so the cases stay where they mean to be when the
engine's writes change.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from support import graph_accepted_ids, storygraph_cli, write_story_yaml

pytestmark = pytest.mark.slow

SCENES = ("s01-arrival", "s04-meeting")
TRANSITIONS = (("s01-arrival", "s04-meeting", "cut", None),)
LAST = SCENES[-1]


@pytest.fixture(scope="module")
def story_file(tmp_path_factory):
    return write_story_yaml(tmp_path_factory.mktemp("full-story") / "story.yaml", SCENES, TRANSITIONS,
                            width=64, height=64, frames=9, steps=2)


def _folder(tmp_path: Path, tiny_config, **engine) -> Path:
    d = tmp_path / "story"
    d.mkdir()
    tiny_config.with_overrides(engine={"index_save_every": 1, **engine}).save(d)
    return d


@pytest.fixture(scope="module")
def writes(story_file, tiny_config, tmp_path_factory) -> list[tuple[str, str]]:
    """The writes of a clean run, in order: (point, path)."""
    d = _folder(tmp_path_factory.mktemp("clean"), tiny_config)
    log = d.parent / "writes.log"
    r = storygraph_cli("run", story_file, "--dir", d, env_extra={"STORYGRAPH_WRITES_LOG": str(log)})
    assert r.returncode == 0, r.stderr[-3000:]
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]


def _after(writes, point: str, path_part: str) -> int:
    """How many writes go by before the first ``point`` write whose path holds ``path_part``."""
    return next(i for i, (p, path) in enumerate(writes) if p == point and path_part in path)


def _mid_take(writes) -> dict:
    """The last scene's video and first frames are written, the fourth frame is not. Media are written on a
    background thread beside the observer's frames, so the write is named by its path, not counted; only media
    writes fail (the engine's thread may log a stage meanwhile, and that is not the case tried here)."""
    return {"STORYGRAPH_FULL_FROM": f"{LAST}/take-0/last_frames/0003.png", "STORYGRAPH_FULL_AT": "media"}


def _at_commit(writes) -> dict:
    """The last scene's take is written whole and observed; its commit fails. Graph writes all come from the
    engine's own thread, in the same order as the observer's: counted among graph writes alone."""
    observed = _after(writes, "media", f"{LAST}/take-0/frame_")
    before = sum(p == "graph" for p, _ in writes[:observed])
    return {"STORYGRAPH_FULL_AT": "graph", "STORYGRAPH_FULL_AFTER": str(before)}


CASES = {
    # the write refused first is in the last scene's take: its files (the writer's) or the observer's beside them
    "mid-take": (_mid_take, {}, "no space left on the device writing", f"{LAST}/take-0/"),
    "at-commit": (_at_commit, {}, "no space left on the device writing", "graph"),
    "unwritable": (_mid_take, {"STORYGRAPH_FULL_ERRNO": "EACCES"}, "cannot write", "Permission denied"),
}


def _check_whole(d: Path, store) -> None:
    """No temporary file left anywhere; every media file readable; what the graph calls done is on disk."""
    from PIL import Image

    from storygraph.engine.media import read_video

    leftovers = [p for p in d.rglob("*") if ".part" in p.name or p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    for png in (d / "media").rglob("*.png"):
        with Image.open(png) as im:
            im.load()  # a truncated file raises
    for mp4 in (d / "media").rglob("*.mp4"):
        assert len(read_video(mp4)) > 0
    for s in store.scenes():
        assert s.status in ("planned", "generating", "failed", "interrupted", "done"), s.status
        if s.status == "done":
            assert (d / s.video_path).is_file() and (d / s.last_frame_path).is_file()  # relative to the folder


def _index_on_disk(d: Path) -> dict:
    from storygraph.engine.vectors import VectorIndex

    return {space: set(VectorIndex.open(d / "vectors", space, device="cpu").ids()) for space in ("clip", "dino")}


def _resume_and_check(d: Path) -> None:
    from storygraph.graphdb import open_store

    r = storygraph_cli("resume", d)
    assert r.returncode == 0, r.stderr[-3000:]
    store = open_store(d, create=False)
    try:
        assert {s.id: s.status for s in store.scenes()} == {s: "done" for s in SCENES}
        takes = [row[0] for row in store.query("MATCH (t:Take) RETURN t.id", {}, read_only=True).rows]
        assert sorted(takes) == sorted(f"{s}#take0" for s in SCENES)  # one take each: none made twice
        accepted = graph_accepted_ids(store)
        _check_whole(d, store)
    finally:
        store.close()
    assert accepted and all(ids == accepted for ids in _index_on_disk(d).values())


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_a_full_disk_mid_run_says_one_line_keeps_the_story_whole_and_resume_completes(
        case, writes, story_file, tiny_config, tmp_path):
    where, env, words, names = CASES[case]
    from storygraph.graphdb import open_store

    d = _folder(tmp_path, tiny_config)
    r = storygraph_cli("run", story_file, "--dir", d, env_extra={**where(writes), **env})
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    line = _one_error_line(r.stderr)
    assert words in line and names in line and "storygraph resume" in line, line

    store = open_store(d, create=False)
    try:
        status = {s.id: s.status for s in store.scenes()}
        assert status[SCENES[0]] == "done" and status[LAST] != "done", status
        takes = [row[0] for row in store.query("MATCH (t:Take) RETURN t.id", {}, read_only=True).rows]
        assert sorted(takes) == sorted(f"{s}#take0" for s in SCENES[:-1])  # the failed take is not in the graph
        accepted = graph_accepted_ids(store)
        _check_whole(d, store)
    finally:
        store.close()
    for space, ids in _index_on_disk(d).items():
        assert ids <= accepted, space  # the index never holds what the graph lacks
    _resume_and_check(d)


def test_an_index_that_cannot_be_saved_loses_nothing(story_file, tiny_config, tmp_path):
    """The vector index can never be written: every scene is still made and committed, the run ends with one line
    saying so, and the next open rebuilds the index from the graph."""
    d = _folder(tmp_path, tiny_config)
    r = storygraph_cli("run", story_file, "--dir", d,
                       env_extra={"STORYGRAPH_FULL_AFTER": "0", "STORYGRAPH_FULL_AT": "index"})
    assert r.returncode == 1, r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert "the vector index was not saved" in line and "rebuilds the index" in line, line
    assert not any((d / "vectors").rglob("*.npz"))
    _resume_and_check(d)


def test_a_broken_vectors_folder_is_rebuilt_from_the_graph(tmp_path):
    """``vectors/clip`` replaced by a file, ``vectors/dino/manifest.json`` by a folder: opening puts them right and
    indexes what the graph holds."""
    from support import commit, example_store, make_appearance
    from storygraph.engine.indexes import IndexKeeper

    store, story = example_store(tmp_path / "story")
    try:
        rng = np.random.default_rng(0)
        for i, sid in enumerate([s.id for s in story.scenes[:3]]):
            app = make_appearance(store, f"a{i}", "mara", sid, rng.normal(size=8), rng.normal(size=8))
            commit(store, sid, [app])
        accepted = graph_accepted_ids(store)
        folder = tmp_path / "story" / "vectors"
        IndexKeeper(folder, store, "cpu").indexes()
        (folder / "clip").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / "clip")
        (folder / "clip").write_text("not an index")
        (folder / "dino").mkdir(parents=True, exist_ok=True)
        (folder / "dino" / "manifest.json").mkdir()
        keeper = IndexKeeper(folder, store, "cpu")
        assert {space: set(idx.ids()) for space, idx in keeper.indexes().items()} == {"clip": accepted,
                                                                                     "dino": accepted}
        keeper.save()
    finally:
        store.close()
    assert (folder / "clip").is_dir() and (folder / "dino" / "manifest.json").is_file()
    assert _index_on_disk(tmp_path / "story") == {"clip": accepted, "dino": accepted}
    assert Counter(p.suffix for p in folder.rglob("*") if p.is_file()) == Counter({".json": 2, ".npz": 2, "": 2})
