"""Take bookkeeping: a take's seed, the fingerprint of what it was made from, which take numbers a run makes,
which take continues the timeline, and the reinforcement of the memories the chosen take used.

A take is numbered per scene. Its request key (a fingerprint of the prompt, every generation setting, the seed
and the conditions) is stored with it, so a resumed run recognises a take it would make again and reuses it
instead of generating it twice; a take made from an older spec keeps its number and the new one gets the next.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..config import EngineConfig
from ..domain import ConditionRecord, MemoryParams, SceneSpec
from ..graphdb import SceneCommit, SceneRecord, StoryStore, TakeRecord
from . import memory


@dataclass
class TakeOutcome:
    """One take of the scene a run is generating.

    ``recovered``: an earlier run made and committed this take, then stopped before finishing the scene; it is
    never made again, only chosen (or not) now. Otherwise ``commit`` holds what this run made, to be written.
    ``attempts``: the generator's out-of-memory retries, one line each. ``timings``, ``peak_gib``, ``settings``:
    the generator's, for the scene's timing record.
    """

    take: TakeRecord
    commit: Optional[SceneCommit] = None
    recovered: bool = False
    attempts: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    peak_gib: Optional[float] = None
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_graph(cls, take: TakeRecord) -> "TakeOutcome":
        return cls(take, recovered=True)


class TakeBook:
    """Seeds, request keys, take numbers and the best take of a story's scenes."""

    def __init__(self, store: StoryStore, engine: EngineConfig, params: MemoryParams):
        self.store = store
        self.best_take_by = engine.best_take_by
        self.params = params

    @staticmethod
    def seed(spec: SceneSpec, take: int) -> int:
        return int(spec.seed or 0) + take

    def request_key(self, spec: SceneSpec, take: int, prompt: str, records: Sequence[ConditionRecord]) -> str:
        """A fingerprint of everything the take is made from: prompt, generation settings (the take's seed),
        and conditions."""
        settings = {**spec.generation(), "seed": self.seed(spec, take)}
        what = [prompt, *settings.values(),
                [(r.role, r.target_kind, r.target_id, r.frame_index, r.strength) for r in records]]
        return hashlib.sha1(json.dumps(what, default=str).encode()).hexdigest()

    def plan(self, scene: SceneRecord, takes: int, prompt: str,
             records: Sequence[ConditionRecord]) -> tuple[list[int], dict[int, TakeRecord]]:
        """The take numbers to produce, and the scene's committed takes by number.

        A committed take made from exactly this request is what this run would make again, so its number is
        reused (a resumed run); a generated scene gets new takes after its last one."""
        existing = {t.take: t for t in self.store.takes(scene.id)}
        n = max(existing) + 1 if scene.status == "done" and existing else 0
        out: list[int] = []
        while len(out) < takes:
            old = existing.get(n)
            if old is None or old.request_key == self.request_key(scene.spec, n, prompt, records):
                out.append(n)
            n += 1
        return out, existing

    def score(self, take: TakeRecord) -> float:
        """How good a take is by ``[engine] best_take_by``: one score, or the mean of identity, text alignment
        and transition smoothness."""
        s = take.scores
        if self.best_take_by == "mean":
            vals = [v for v in (s.identity, s.text_alignment, s.transition_smoothness) if v is not None]
            return sum(vals) / len(vals) if vals else 0.0
        v = getattr(s, self.best_take_by, None)
        return float(v) if v is not None else float("-inf")

    def best(self, outcomes: Sequence[TakeOutcome]) -> TakeOutcome:
        return max(outcomes, key=lambda o: self.score(o.take))

    def reinforcements(self, records: Sequence[ConditionRecord], take: TakeRecord, clock: float) -> list:
        """``(appearance id, strength, reinforced clock)`` for the memories the take used as keyframes: they gain
        strength when the take kept the character's identity and lose it when it drifted."""
        used = [r.target_id for r in records if r.target_kind == "Appearance"]
        if not used:
            return []
        out = []
        for a in self.store.appearances(ids=used, with_vectors=False):
            identity = take.scores.identity_by_character.get(a.character_id)
            if identity is None:
                continue
            strength, reinforced_clock = memory.update_strength(a.strength, a.reinforced_clock, identity, clock,
                                                                self.params)
            out.append((a.id, strength, reinforced_clock))
        return out
