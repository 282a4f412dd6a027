"""Plain helpers the tests share (fixtures live in ``conftest.py``): small stories cut from the example, takes
committed the way the engine commits them, planted embeddings with known memory answers, and the CLI run in a
fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from storygraph.domain import (
    Appearance, Character, ConditionRecord, Environment, SceneSpec, Scores, Story, Transition,
)
from storygraph.graphdb import SceneCommit, TakeRecord, open_store
from storygraph.storyfile import load_story

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


# -- stories cut from the example -----------------------------------------------------------------------------
#: A short cut of the example: a continuous transition, a cut to a character seen before, a cut to a
#: character never seen before, and a time skip.
SHORT_SCENES = ("s01-arrival", "s02-package", "s03-keeper", "s04-meeting", "s06-escape")
SHORT_TRANSITIONS = (
    ("s01-arrival", "s02-package", "continuous", None),
    ("s02-package", "s03-keeper", "cut", 0.5),
    ("s03-keeper", "s04-meeting", "cut", None),
    ("s04-meeting", "s06-escape", "time_skip", 12.0),
)


def harbor_story(scene_ids=SHORT_SCENES, transitions=SHORT_TRANSITIONS, story_id: str = "harbor-short"):
    """The example story cut down to ``scene_ids`` joined by ``transitions`` (from, to, kind, gap), at the
    tiny models. size (64x64, 9 frames, 2 steps)."""
    from storygraph.engine.demo import demo_story

    full = demo_story(load_story(EXAMPLE))
    by_id = {s.id: s for s in full.scenes}
    scenes = tuple(by_id[i] for i in scene_ids)
    used_chars = {c for s in scenes for c in s.characters}
    used_envs = {s.environment for s in scenes}
    return replace(full, id=story_id, scenes=scenes,
                   characters=tuple(c for c in full.characters if c.id in used_chars),
                   environments=tuple(e for e in full.environments if e.id in used_envs),
                   transitions=tuple(Transition(a, b, k, g) for a, b, k, g in transitions))


def write_story_yaml(path: Path, scene_ids=SHORT_SCENES, transitions=SHORT_TRANSITIONS, *, width: int = 64,
                     height: int = 64, frames: int = 9, steps: int = 2, story_id: str = "harbor-short") -> Path:
    """Write a story file: the example's ``scene_ids`` joined by ``transitions``, at a tiny size."""
    import yaml

    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    scenes = [s for s in data["scenes"] if s["id"] in scene_ids]
    for s in scenes:
        for key in ("width", "height", "frames", "fps", "steps", "guidance"):
            s.pop(key, None)
    chars = {c for s in scenes for c in s.get("characters", [])}
    envs = {s.get("environment") for s in scenes}
    data["story"]["id"] = story_id
    data["defaults"].update(width=width, height=height, frames=frames, fps=8, steps=steps, guidance=1.0)
    data["scenes"] = scenes
    data["characters"] = [c for c in data["characters"] if c["id"] in chars]
    data["environments"] = [e for e in data["environments"] if e["id"] in envs]
    data["transitions"] = [{"from": a, "to": b, "kind": k, **({"gap": g} if g is not None else {})}
                           for a, b, k, g in transitions]
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def new_engine(story_dir: Path, config, runtime, story=None, **config_overrides):
    """A ``StoryEngine`` on a fresh folder using the shared tiny models (and the story loaded, if given)."""
    from storygraph.engine.engine import StoryEngine

    if config_overrides:
        config = config.with_overrides(**config_overrides)
    story_dir.mkdir(parents=True, exist_ok=True)
    config.save(story_dir)
    engine = StoryEngine.open(story_dir, config=config, generator=runtime["generator"],
                              encoders=runtime["encoders"])
    if story is not None:
        engine.load(story)
    return engine


# -- subprocesses ------------------------------------------------------------------------------------------
def storygraph_cli(*args, env_extra: dict | None = None, timeout: float = 300, cwd=None):
    """Run ``storygraph ARGS`` in a fresh interpreter; returns the CompletedProcess (text output)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    for k in ("STORYGRAPH_CRASH_AT", "STORYGRAPH_CRASH_SKIP", "STORYGRAPH_FULL_AFTER", "STORYGRAPH_FULL_AT",
              "STORYGRAPH_FULL_FROM", "STORYGRAPH_FULL_ERRNO", "STORYGRAPH_WRITES_LOG"):
        env.pop(k, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "storygraph.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# -- invariants --------------------------------------------------------------------------------------------
def graph_accepted_ids(store) -> set[str]:
    """Ids of every accepted appearance in the graph, read with a Cypher query (independent of the store's
    own ``appearance_keys``)."""
    rows = store.query("MATCH (a:Appearance) WHERE a.accepted RETURN a.id AS id", {}, read_only=True).rows
    return {r[0] for r in rows}


# -- the viewer: stores with takes, SSE, the page ------------------------------------------------------
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


@dataclass
class Served:
    """A viewer served from a daemon thread: its store, the story it holds, its engine (a studio) and its app."""

    store: object
    story: object
    app: object
    server: object
    engine: object = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token


def shot(page, name: str) -> None:
    """A screenshot of the page, kept as a test artifact under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def open_page(page, served: Served, ready: str, token: bool = True) -> list:
    """Open the viewer (with its token) and wait until ``ready`` holds; returns the page's errors as they come."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(served.url + (f"?token={served.token}" if token else ""))
    wait_js(page, f"window.storygraph && storygraph.ready && storygraph.live === 'live' && ({ready})", timeout=60)
    return errors


def click_node(page, node_id: str) -> None:
    """A real mouse click on a node where Cytoscape drew it."""
    pos = page.evaluate(f"(() => {{ const p = storygraph.cy.getElementById({json.dumps(node_id)}).renderedPosition();"
                        "return [p.x, p.y]; })()")
    box = page.locator("#cy").bounding_box()
    page.mouse.click(box["x"] + pos[0], box["y"] + pos[1])


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


# -- planted memories -------------------------------------------------------------------------------------
#: An appearance's DINOv2 vector is its character's identity direction plus an outfit direction plus noise; its
#: CLIP vector is the scene's environment direction plus a weaker character direction plus noise. A CLIP "text
#: query" for (character, environment) is the same mixture without noise. Every direction is a fixed random unit
#: vector per name, so the right answer of each query is known by construction.
DIM = 32


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


class Planted:
    def __init__(self, seed: int = 0, dim: int = DIM):
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self._dirs: dict[str, np.ndarray] = {}

    def direction(self, name: str) -> np.ndarray:
        if name not in self._dirs:
            self._dirs[name] = unit(self.rng.standard_normal(self.dim))
        return self._dirs[name]

    def noise(self, scale: float) -> np.ndarray:
        return scale * unit(self.rng.standard_normal(self.dim))

    def dino(self, character: str, outfit: str = "default", noise: float = 0.05, off_model: bool = False) -> np.ndarray:
        ident = self.direction(f"id:{character}")
        if off_model:  # somebody else wearing the outfit: weak identity component
            ident = 0.3 * ident + 1.0 * self.direction(f"impostor:{character}:{outfit}")
        return unit(ident + 0.3 * self.direction(f"outfit:{outfit}") + self.noise(noise))

    def clip(self, character: str, environment: str, noise: float = 0.05) -> np.ndarray:
        return unit(self.direction(f"env:{environment}") + 0.5 * self.direction(f"clip-id:{character}")
                    + self.noise(noise))

    def text(self, character: str, environment: str) -> np.ndarray:
        return unit(self.direction(f"env:{environment}") + 0.5 * self.direction(f"clip-id:{character}"))

    def reference(self, character: str) -> np.ndarray:
        return unit(self.direction(f"id:{character}") + 0.3 * self.direction("outfit:default"))


def memory_story(scenes: Iterable[tuple[str, str, tuple[str, ...]]], transitions: Iterable[Transition],
          characters: Iterable[Character], story_id: str = "mem") -> Story:
    scenes = list(scenes)
    envs = sorted({env for _, env, _ in scenes})
    return Story(story_id, "memory test", characters=tuple(characters),
                 environments=tuple(Environment(e, f"the {e}") for e in envs),
                 scenes=tuple(SceneSpec(sid, "acts", cast, env) for sid, env, cast in scenes),
                 transitions=tuple(transitions))


def make_appearance(store, aid: str, character: str, scene_id: str, dino, clip, *, take: int = 0,
                    strength: float = 1.0, reinforced_clock: Optional[float] = None,
                    identity_score: float = 0.9) -> Appearance:
    p = store.scene(scene_id).placement
    return Appearance(
        id=aid, character_id=character, scene_id=scene_id, frame_index=0, frame_path=f"/media/{aid}.png",
        strength=strength, reinforced_clock=p.clock if reinforced_clock is None else reinforced_clock,
        identity_score=identity_score, clip=[float(x) for x in clip], dino=[float(x) for x in dino],
        clock=p.clock, branch=p.branch, pos=p.pos, take=take)


def commit(store, scene_id: str, appearances: list[Appearance], take: int = 0, choose: bool = True,
           conditioned_on: Iterable[ConditionRecord] = (), identity: Optional[dict] = None) -> int:
    """Commit a take; ``conditioned_on`` records the memories it used, ``identity`` the identity it kept per
    character (what a later scene's memory of those memories is derived from)."""
    t = TakeRecord(scene_id, take, take, f"prompt {scene_id}", f"/media/{scene_id}/{take}.mp4",
                   f"/media/{scene_id}/{take}.png", f"/media/{scene_id}/{take}",
                   Scores(identity=0.9, identity_by_character=dict(identity or {})))
    return store.commit_take(SceneCommit(t, appearances, list(conditioned_on), choose))


def used(*appearance_ids: str) -> list[ConditionRecord]:
    """``CONDITIONED_ON`` records of keyframes from these appearances."""
    return [ConditionRecord("keyframe", "Appearance", aid, 0, 0.6, 1.0, f"memory {aid}") for aid in appearance_ids]


def embedded_store(folder: Path):
    from storygraph.graphdb.embedded import EmbeddedStore

    return EmbeddedStore(folder)
