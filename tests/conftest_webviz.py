"""Helpers shared by the viewer tests: the example story in a fresh embedded store, and takes committed
through the store the way the engine commits them (real media files under the story's ``media/``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from storygraph.domain import Appearance, ConditionRecord, Scores
from storygraph.graphdb import SceneCommit, TakeRecord, open_store
from storygraph.storyfile import load_story

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def example_store(story_dir: Path):
    """An embedded store in ``story_dir`` holding the example story; returns (store, story)."""
    story = load_story(EXAMPLE)
    store = open_store(story_dir)
    store.load_story(story)
    return store, story


def write_png(path: Path, seed: int, size=(48, 32)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_mp4(path: Path, seed: int, frames: int = 9) -> Path:
    import imageio.v2 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    iio.mimwrite(path, [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(frames)], fps=8,
                 codec="libx264", macro_block_size=16, pixelformat="yuv420p")
    return path


def commit_take(store, scene_id: str, take: int = 0, *, choose: bool = True, identity: float = 0.8,
                video: bool = False, conditioned_on: Optional[list[ConditionRecord]] = None) -> int:
    """Commit one take of ``scene_id`` with a last frame (and a video when asked) under media/; returns its seq."""
    rec = store.scene(scene_id)
    media = Path(store.path) / "media" / scene_id / f"take-{take}"
    last = write_png(media / "last.png", seed=hash((scene_id, take)) % 2**32)
    video_path = write_mp4(media / "video.mp4", seed=take) if video else media / "video.mp4"
    apps = []
    for i, cid in enumerate(rec.spec.characters):
        frame = write_png(media / f"frame-{cid}.png", seed=i + 17 * take)
        apps.append(Appearance(
            id=f"{scene_id}#t{take}#{cid}", character_id=cid, scene_id=scene_id, frame_index=4,
            frame_path=str(frame), strength=1.0 + 0.5 * i, reinforced_clock=rec.clock,
            identity_score=identity - 0.1 * i, clip=[0.1] * 8, dino=[0.2] * 8, clock=rec.clock,
            branch=rec.placement.branch, pos=rec.placement.pos, take=take))
    scores = Scores(text_alignment=0.31, subject_consistency=0.9, background_consistency=0.88, identity=identity,
                    transition_smoothness=0.7, identity_by_character={a.character_id: a.identity_score for a in apps})
    t = TakeRecord(scene_id, take, seed=100 + take, prompt=f"prompt of {scene_id} take {take}",
                   video_path=str(video_path), last_frame_path=str(last), frames_dir=str(media), scores=scores)
    return store.commit_take(SceneCommit(t, apps, conditioned_on or [], choose=choose))


def graph_expectations(story) -> dict:
    """Node and edge counts the viewer must draw for ``story`` (computed from the story file)."""
    return {
        "scenes": len(story.scenes), "characters": len(story.characters), "environments": len(story.environments),
        "next": len(story.transitions), "appears": sum(len(s.characters) for s in story.scenes),
        "setin": sum(1 for s in story.scenes if s.environment),
    }


def read_sse(response, want: int, timeout: float = 10.0, stop_on=None) -> list[dict]:
    """Parse up to ``want`` SSE messages from a streaming test-client response (comments included as
    ``{"comment": text}``); stops early when ``stop_on(msg)`` is true."""
    out: list[dict] = []
    buf = ""
    deadline = time.monotonic() + timeout
    it = iter(response.response)
    while len(out) < want and time.monotonic() < deadline:
        chunk = next(it)
        buf += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            msg: dict = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    msg["comment"] = line[1:].strip()
                elif ":" in line:
                    k, v = line.split(":", 1)
                    msg[k] = v[1:] if v.startswith(" ") else v
            if "data" in msg:
                msg["json"] = json.loads(msg["data"])
            out.append(msg)
            if stop_on is not None and stop_on(msg):
                return out
    return out


def wait_js(page, expression: str, timeout: float = 15.0, interval: float = 0.03):
    """Poll a JS expression in ``page`` until it is truthy; returns its value. (``page.wait_for_function``
    evaluates strings with eval, which the viewer's Content-Security-Policy forbids.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        time.sleep(interval)
