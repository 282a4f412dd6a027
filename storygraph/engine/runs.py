"""Runs: which scenes a run generates, in what order, and what steers it while it goes.

A run is a :class:`Selection` — every unfinished scene, one timeline (a branch and the unfinished scenes it
follows), the stale scenes, or one scene — turned into an ordered list of scenes by :func:`scenes_to_run`, then
generated one by one by ``StoryEngine.run``. ``storygraph run`` / ``resume`` and the studio's queue go through the
same call; what differs is only who listens to the progress and who may cancel.

:class:`RunControl` is the handle a run is steered by from another thread: ``cancel()`` stops it between two
denoising steps (or two stages), and the scene being made goes back to what it was before (planned, or done with
its earlier takes) with nothing of the unfinished take left on disk. :class:`Progress` turns stage and step
callbacks into one record per moment — which scene, which take, which step of how many, and an estimate of the
time left from the seconds per step measured so far in this run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

from ..errors import Conflict, InvalidInput
from ..timeline import timeline_order
from .errors import EngineError

SELECTIONS = ("all", "branch", "stale", "scene")


class Cancelled(EngineError, Conflict):
    """The run was cancelled; the scene it was making is back to its state before the run."""


class SelectionError(EngineError, InvalidInput):
    """A selection the engine cannot resolve (an unknown kind, branch or scene)."""


@dataclass(frozen=True)
class Selection:
    """What a run generates: ``all`` unfinished scenes, the timeline of ``branch`` ``target``, the ``stale``
    scenes, or one ``scene`` ``target``. ``until``: stop after this scene."""

    kind: str = "all"
    target: Optional[str] = None
    until: Optional[str] = None
    keep_stale: bool = False  # all / branch: leave stale scenes as they are (their media stands in for them)

    def __post_init__(self):
        if self.kind not in SELECTIONS:
            raise SelectionError(f"unknown run selection {self.kind!r}: expected one of {', '.join(SELECTIONS)}")
        if self.kind in ("branch", "scene") and not self.target:
            raise SelectionError(f"a {self.kind} run needs the {self.kind} it is about")

    def describe(self) -> str:
        return {"all": "every unfinished scene", "stale": "the stale scenes",
                "branch": f"timeline {self.target}", "scene": f"scene {self.target}"}[self.kind]


def timeline_of(scenes: Sequence, branch: str) -> list:
    """The scenes of the timeline that ends on ``branch``: the branch's own scenes and every scene it follows
    (its lineage), in story order."""
    own = [s for s in scenes if s.placement.branch == branch]
    if not own:
        raise SelectionError(f"no branch {branch!r} in this story")
    lineage = dict(max(own, key=lambda s: s.placement.pos).placement.lineage)
    out = []
    for s in scenes:
        p = s.placement
        if p.branch == branch or (p.branch in lineage and p.pos <= lineage[p.branch]):
            out.append(s)
    return out


def scenes_to_run(scenes: Sequence, selection: Selection) -> list:
    """The scenes ``selection`` generates, parents first (``scenes`` as the store lists them: parents first).

    ``all``: every scene that needs making — planned, failed, interrupted and (unless ``keep_stale``) stale; not
    one another worker is generating. ``branch``: those of that timeline. ``stale``: scenes marked stale.
    ``scene``: that scene, whatever its state (a done scene gets more takes). In timeline order, parents first.
    """
    if selection.kind == "scene":
        found = [s for s in scenes if s.id == selection.target]
        if not found:
            raise SelectionError(f"no scene {selection.target!r}")
        return found
    order = {sid: i for i, sid in enumerate(timeline_order({s.id: s.placement for s in scenes}))}
    scenes = sorted(scenes, key=lambda s: order[s.id])
    if selection.kind == "stale":
        return [s for s in scenes if s.status == "stale"]
    pool = timeline_of(scenes, selection.target) if selection.kind == "branch" else scenes
    leave = {"done", "generating"} | ({"stale"} if selection.keep_stale else set())
    return [s for s in pool if s.status not in leave]


class RunControl:
    """Steers a run from another thread: ``cancel()``; the run calls ``check()`` between steps and stages."""

    def __init__(self):
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("the run was cancelled")


@dataclass
class ProgressState:
    """One moment of a run, as listeners and the studio see it."""

    scene: Optional[str] = None
    stage: Optional[str] = None
    take: Optional[int] = None
    step: int = 0  # denoising steps finished in the current take
    steps: int = 0  # denoising steps of one take
    scene_index: int = 0  # 0-based position of the current scene in the run
    scenes: int = 0  # scenes in the run
    done: list = field(default_factory=list)  # scene ids finished in this run
    elapsed_s: float = 0.0
    eta_s: Optional[float] = None  # seconds left, from the seconds per step measured so far

    def as_dict(self) -> dict:
        d = asdict(self)
        d["elapsed_s"] = round(d["elapsed_s"], 2)
        d["eta_s"] = None if self.eta_s is None else round(self.eta_s, 1)
        return d


class Progress:
    """Counts steps across a run and estimates the time left.

    Each scene is worth ``steps x takes`` denoising steps; the estimate is (steps left) x (seconds per step so far,
    everything included: retrieval, decoding, observing and committing are charged to the steps they surround).
    """

    def __init__(self, plan: Sequence, takes: Callable[[object], int],
                 listener: Optional[Callable[[ProgressState], None]] = None):
        self._work = {s.id: max(1, int(s.spec.steps or 1)) * max(1, int(takes(s))) for s in plan}
        self._order = [s.id for s in plan]
        self._listener = listener
        self._t0 = time.monotonic()
        self._steps_done = 0  # finished steps of finished scenes
        self._current_done = 0  # finished steps of the scene being made
        self.state = ProgressState(scenes=len(plan))

    @property
    def total_steps(self) -> int:
        return sum(self._work.values())

    def stage(self, scene_id: str, stage: str, info: dict) -> None:
        st = self.state
        if scene_id != st.scene:
            st.scene, st.step, self._current_done = scene_id, 0, 0
            st.scene_index = self._order.index(scene_id) if scene_id in self._order else st.scene_index
        st.stage = stage
        if "take" in info:
            st.take = info["take"]
        if stage == "generate":
            st.step = 0
            st.steps = int(info.get("steps") or st.steps or 0)
        self._emit()

    def step(self, scene_id: str, step: int, steps: int) -> None:
        st = self.state
        st.step, st.steps = min(step, steps), steps
        self._current_done += 1
        self._emit()

    def scene_finished(self, scene_id: str) -> None:
        self._steps_done += self._work.get(scene_id, 0)
        self._current_done = 0
        if scene_id not in self.state.done:
            self.state.done.append(scene_id)
        self._emit()

    def scene_skipped(self, scene_id: str) -> None:
        self._work.pop(scene_id, None)

    def _emit(self) -> None:
        st = self.state
        st.elapsed_s = time.monotonic() - self._t0
        done = self._steps_done + min(self._current_done, self._work.get(st.scene, 0))
        st.eta_s = None if done == 0 else st.elapsed_s / done * max(0, self.total_steps - done)
        if self._listener is not None:
            self._listener(st)
