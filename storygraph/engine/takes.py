"""Take bookkeeping: a take's seed, the fingerprint of what it was made from, which take numbers a run makes, and
which take continues the timeline.

A take is numbered per scene. Its request key (a fingerprint of the prompt, every generation setting, the seed,
the conditions and the parent's take they were cut from) is stored with it, so a resumed run recognises a take it
would make again and reuses it instead of generating it twice; a take made from an older spec keeps its number and
the new one gets the next. A take whose media is gone is never reused.

Takes never get worse by accident: new takes compete with the chosen one (the *incumbent*) unless the scene is
stale or its media is gone, and the choice changes only when a new take scores strictly better on
``[engine] best_take_by``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..config import EngineConfig
from ..domain import ConditionRecord, MemoryParams, SceneSpec
from ..graphdb import SceneCommit, SceneRecord, StoryStore, TakeRecord


@dataclass
class TakeOutcome:
    """One take of the scene a run is generating.

    ``recovered``: an earlier run made and committed this take (then stopped before finishing the scene, or it is
    the chosen take competing with new ones); it is never made again, only chosen (or not) now. Otherwise
    ``commit`` holds what this run made, to be written. ``attempts``: the generator's out-of-memory retries, one
    line each. ``timings``, ``peak_gib``, ``settings``: the generator's, for the scene's timing record.
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

    def __init__(self, store: StoryStore, engine: EngineConfig, params: MemoryParams,
                 media_ok: Optional[Callable[[str], bool]] = None):
        self.store = store
        self.best_take_by = engine.best_take_by
        self.params = params
        self.media_ok = media_ok or (lambda path: True)

    @staticmethod
    def seed(spec: SceneSpec, take: int) -> int:
        return int(spec.seed or 0) + take

    def request_key(self, spec: SceneSpec, take: int, prompt: str, records: Sequence[ConditionRecord],
                    seed: Optional[int] = None, upstream: Optional[int] = None) -> str:
        """A fingerprint of everything the take is made from: prompt, generation settings (the take's seed, or
        ``seed``), conditions with the mode each reached the model in, and ``upstream`` (the parent's chosen take,
        whose frames a scene condition carries)."""
        settings = {**spec.generation(), "seed": self.seed(spec, take) if seed is None else int(seed)}
        what = [prompt, *settings.values(),
                [(r.role, r.target_kind, r.target_id, r.frame_index, r.strength, r.mode) for r in records]]
        if upstream is not None and any(r.target_kind == "Scene" for r in records):
            what.append(int(upstream))
        return hashlib.sha1(json.dumps(what, default=str).encode()).hexdigest()

    def plan(self, scene: SceneRecord, takes: int, prompt: str, records: Sequence[ConditionRecord],
             upstream: Optional[int] = None) -> tuple[list[int], dict[int, TakeRecord]]:
        """The take numbers to produce, and the scene's committed takes by number.

        A committed take made from exactly this request, with its media there, is what this run would make again,
        so its number is reused (a resumed run); a scene that was done or stale gets new takes after its last one."""
        existing = {t.take: t for t in self.store.takes(scene.id)}
        n = max(existing) + 1 if scene.status in ("done", "stale") and existing else 0
        out: list[int] = []
        while len(out) < takes:
            old = existing.get(n)
            if old is None or (old.request_key == self.request_key(scene.spec, n, prompt, records, upstream=upstream)
                               and self.media_ok(old.video_path)):
                out.append(n)
            n += 1
        return out, existing

    def incumbent(self, scene: SceneRecord, existing: dict[int, TakeRecord],
                  numbers: Sequence[int]) -> Optional["TakeOutcome"]:
        """The chosen take, when it competes with the new ones: it is there, its media is, and the scene is not
        stale (a stale scene's take was made from something that changed since)."""
        t = existing.get(scene.chosen_take) if scene.chosen_take is not None else None
        if t is None or scene.chosen_take in numbers or scene.stale_reason or not self.media_ok(t.video_path):
            return None
        return TakeOutcome.from_graph(t)

    def score(self, take: TakeRecord) -> float:
        """How good a take is by ``[engine] best_take_by``: one score, or the mean of identity, text alignment
        and transition smoothness."""
        s = take.scores
        if self.best_take_by == "mean":
            vals = [v for v in (s.identity, s.text_alignment, s.transition_smoothness) if v is not None]
            return sum(vals) / len(vals) if vals else 0.0
        v = getattr(s, self.best_take_by, None)
        return float(v) if v is not None else float("-inf")

    def best(self, outcomes: Sequence[TakeOutcome], incumbent: Optional[TakeOutcome] = None) -> TakeOutcome:
        """The take that continues the timeline: the best new one, unless the incumbent scores at least as well
        (a tie keeps the incumbent; among new takes the first of equals wins)."""
        best = max(outcomes, key=lambda o: self.score(o.take))
        if incumbent is not None and self.score(incumbent.take) >= self.score(best.take):
            return incumbent
        return best
