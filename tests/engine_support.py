"""Shared pieces of the engine tests: tiny models built once per test run, small stories cut from the example,
and the invariants a finished story must satisfy.

Import the fixtures into a test module (``from engine_support import tiny_config, tiny_runtime``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"

#: A short cut of the example: a continuous transition, a cut to a character seen before, a cut to a
#: character never seen before, and a time skip.
SHORT_SCENES = ("s01-arrival", "s02-package", "s03-keeper", "s04-meeting", "s06-escape")
SHORT_TRANSITIONS = (
    ("s01-arrival", "s02-package", "continuous", None),
    ("s02-package", "s03-keeper", "cut", 0.5),
    ("s03-keeper", "s04-meeting", "cut", None),
    ("s04-meeting", "s06-escape", "time_skip", 12.0),
)


# -- models ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """A ``Config`` whose models are tiny random-weight CLIP, DINOv2 and LTX-2 folders (built once)."""
    from storygraph.engine.demo import prepare

    return prepare(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_runtime(tiny_config):
    """The tiny generator and encoders loaded once through ``from_pretrained``, shared by in-process engines."""
    from storygraph.engine.encoders import Encoders
    from storygraph.engine.generators.ltx2 import LTX2Generator

    m = tiny_config.models
    return {"generator": LTX2Generator.from_pretrained(m.ltx2, device="cpu"),
            "encoders": Encoders.load(clip=m.clip, dino=m.dino, device="cpu")}


# -- stories -----------------------------------------------------------------------------------------------
def harbor_story(scene_ids=SHORT_SCENES, transitions=SHORT_TRANSITIONS, story_id: str = "harbor-short"):
    """The example story cut down to ``scene_ids`` joined by ``transitions`` (from, to, kind, gap), at the
    tiny models' size (32x32, 9 frames, 2 steps)."""
    from storygraph.domain import Transition
    from storygraph.engine.demo import demo_story
    from storygraph.storyfile import load_story

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
    engine = StoryEngine(story_dir, config=config, generator=runtime["generator"], encoders=runtime["encoders"])
    if story is not None:
        engine.load(story)
    return engine


# -- subprocesses ------------------------------------------------------------------------------------------
def storygraph_cli(*args, env_extra: dict | None = None, timeout: float = 300, cwd=None):
    """Run ``storygraph ARGS`` in a fresh interpreter; returns the CompletedProcess (text output)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    for k in ("STORYGRAPH_CRASH_AT", "STORYGRAPH_CRASH_SKIP"):
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
