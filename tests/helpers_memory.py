"""Planted embeddings and small stories with known memory answers, for the memory, vector and retrieval tests.

An appearance's DINOv2 vector is its character's identity direction plus an outfit direction plus noise; its
CLIP vector is the scene's environment direction plus a weaker character direction plus noise. A CLIP "text
query" for (character, environment) is the same mixture without noise. Every direction is a fixed random unit
vector per name, so the right answer of each query is known by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from storygraph.domain import Appearance, Character, Environment, SceneSpec, Scores, Story, Transition
from storygraph.graphdb.store import SceneCommit, TakeRecord

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


def story(scenes: Iterable[tuple[str, str, tuple[str, ...]]], transitions: Iterable[Transition],
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
           reinforcements=()) -> int:
    t = TakeRecord(scene_id, take, take, f"prompt {scene_id}", f"/media/{scene_id}/{take}.mp4",
                   f"/media/{scene_id}/{take}.png", f"/media/{scene_id}/{take}", Scores(identity=0.9))
    return store.commit_take(SceneCommit(t, appearances, [], list(reinforcements), choose))


def open_store(folder: Path):
    from storygraph.graphdb.embedded import EmbeddedStore

    return EmbeddedStore(folder)
