"""The studio's generation queue: one background worker running ``engine.run_selection``, one job at a time.

A job is a run of the engine (see :mod:`storygraph.engine.runs`): one scene (with N takes), every unfinished
scene, one timeline, or the stale scenes — the same call ``storygraph run`` makes. Jobs wait in order; a queued
job can be cancelled before it starts, a running one between two denoising steps (the scene it was making goes
back to how it was, nothing half-written). The worker writes ``job.queued`` / ``job.started`` /
``job.progress`` (per stage and, at most every ``progress_every_s``, per denoising step, with an estimate of the
time left) / ``job.finished`` / ``job.failed`` / ``job.cancelled`` Events, so every viewer following the log
shows the queue; the engine writes its own scene and take Events as it goes. Finished jobs stay in the history
(outcome, scenes made, duration) up to ``keep`` of them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..engine.runs import Cancelled, RunControl, Selection
from ..errors import Conflict, NotFound, Unavailable

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running", "cancelling")
FINISHED = ("done", "failed", "cancelled")


class JobConflict(Conflict):
    """The same run is already queued or running."""


class JobNotFound(NotFound):
    """No job of that id (or it left the history)."""


@dataclass
class Job:
    id: int
    kind: str  # scene | all | branch | stale
    target: Optional[str]  # the scene or branch
    takes: Optional[int]
    state: str = "queued"  # queued | running | cancelling | done | failed | cancelled
    error: Optional[str] = None
    queued_at: float = field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    planned: list = field(default_factory=list)  # scene ids the run set out to make
    done: list = field(default_factory=list)  # scene ids it made
    skipped: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)  # the last ProgressState, as a dict
    control: RunControl = field(default_factory=RunControl, repr=False)

    @property
    def scene_id(self) -> Optional[str]:
        return self.target if self.kind == "scene" else None

    @property
    def duration_s(self) -> Optional[float]:
        if self.started_at is None:
            return None
        return round((self.finished_at or time.time()) - self.started_at, 2)

    def label(self) -> str:
        return {"scene": f"scene {self.target}", "all": "every unfinished scene", "stale": "the stale scenes",
                "branch": f"timeline {self.target}"}[self.kind]

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "target": self.target, "scene_id": self.scene_id,
                "takes": self.takes, "state": self.state, "error": self.error, "label": self.label(),
                "queued_at": self.queued_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "duration_s": self.duration_s, "planned": list(self.planned), "done": list(self.done),
                "skipped": list(self.skipped), "progress": dict(self.progress)}


class GenerationWorker:
    def __init__(self, engine, store, on_change: Optional[Callable[[], None]] = None, keep: int = 200,
                 progress_every_s: float = 0.5):
        self.engine = engine
        self.store = store
        self.on_change = on_change
        self.progress_every_s = progress_every_s
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: deque = deque()
        self._wake = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None
        self._keep = keep
        self._closed = False

    # -- the queue ---------------------------------------------------------------------------------
    def submit(self, scene_id: Optional[str] = None, takes: Optional[int] = 1, *, kind: str = "scene",
               target: Optional[str] = None) -> Job:
        """Queue a run: ``submit(scene_id, takes)`` for one scene, ``submit(kind="all"|"stale")``,
        ``submit(kind="branch", target=branch)``."""
        if kind == "scene":
            target = scene_id if scene_id is not None else target
        Selection(kind, target)  # refuses what it cannot name
        with self._lock:
            if self._closed:
                raise Unavailable("the generation worker is shut down")
            for j in self._jobs.values():
                if j.state in ACTIVE and (j.kind, j.target) == (kind, target):
                    raise JobConflict(f"{j.label()} already has job {j.id} {j.state}")
            job = Job(next(self._ids), kind, target, None if takes is None else int(takes))
            self._jobs[job.id] = job
            self._trim()
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="storygraph-generate", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        self._event("job.queued", job)
        return job

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job at once, a running one between two denoising steps; a finished one is left."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id}")
            if job.state == "queued":
                self._waiting.remove(job)
                job.state, job.finished_at = "cancelled", time.time()
                kind = "job.cancelled"
            elif job.state == "running":
                job.state = "cancelling"
                job.control.cancel()
                kind = "job.cancelling"
            else:
                return job
        self._event(kind, job)
        return job

    def jobs(self) -> list[dict]:
        with self._lock:
            return [j.as_dict() for j in self._jobs.values()]

    def job(self, job_id: int) -> Optional[dict]:
        with self._lock:
            j = self._jobs.get(job_id)
            return j.as_dict() if j else None

    def busy(self) -> bool:
        with self._lock:
            return any(j.state in ACTIVE for j in self._jobs.values())

    def close(self, wait: float = 0.0) -> None:
        """Take no more jobs and cancel the running one; with ``wait``, wait that long for it to stop."""
        with self._lock:
            self._closed = True
            for j in list(self._waiting):
                j.state, j.finished_at = "cancelled", time.time()
            self._waiting.clear()
            for j in self._jobs.values():
                if j.state == "running":
                    j.control.cancel()
            self._wake.notify_all()
        if wait and self._thread is not None:
            self._thread.join(wait)

    def _trim(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state in FINISHED]
        for jid in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[jid]

    # -- events --------------------------------------------------------------------------------------
    def _event(self, kind: str, job: Job, state: Optional[str] = None, error: Optional[str] = None) -> None:
        """Append a job Event: a small payload (counts, not lists, but for the lists of a finished job)."""
        with self._lock:
            d = job.as_dict()
        if state is not None:  # a finished job's Event is written before its state changes
            d["state"], d["error"] = state, error
            d["finished_at"] = time.time()
            d["duration_s"] = None if job.started_at is None else round(d["finished_at"] - job.started_at, 2)
        payload = {"job": job.id, **{k: d[k] for k in ("kind", "target", "takes", "state", "error", "label",
                                                         "queued_at", "started_at", "finished_at", "duration_s")},
                   "planned_count": len(d["planned"]), "done_count": len(d["done"])}
        if kind == "job.progress" or d["state"] in ("running", "cancelling"):
            payload["progress"] = {k: v for k, v in d["progress"].items() if k != "done"}
        if d["state"] in FINISHED:
            payload.update(done=d["done"][:200], skipped=d["skipped"][:200])
        try:
            self.store.append_event(kind, job.target or "", payload)
        except Exception:  # a progress note must never stop the work itself
            log.exception("could not record %s for job %s", kind, job.id)
        if self.on_change is not None:
            self.on_change()

    # -- the worker thread ------------------------------------------------------------------------------
    def _next(self) -> Optional[Job]:
        with self._lock:
            while not self._waiting and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            job = self._waiting.popleft()
            job.state, job.started_at = "running", time.time()
            return job

    def _run(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                planned = [x.id for x in self.engine.run_plan(Selection(job.kind, job.target))]
            except Exception:  # the run itself says what is wrong
                planned = []
            with self._lock:
                job.planned = planned
            self._event("job.started", job)
            last = {"at": 0.0, "key": None}

            def on_progress(state, job=job, last=last):
                d = state.as_dict()
                with self._lock:
                    job.progress = d
                    job.done = list(d["done"])
                key = (d["scene"], d["stage"], d["take"])
                now = time.monotonic()
                if key != last["key"] or now - last["at"] >= self.progress_every_s:
                    last["key"], last["at"] = key, now
                    self._event("job.progress", job)

            try:
                outcome = self.engine.run_selection(Selection(job.kind, job.target), takes=job.takes,
                                                    control=job.control, on_progress=on_progress)
            except Cancelled:
                self._finish(job, "cancelled", None)
            except Exception as e:
                log.error("job %s (%s) failed:\n%s", job.id, job.label(), traceback.format_exc())
                self._finish(job, "failed", f"{type(e).__name__}: {e}")
            else:
                with self._lock:
                    job.planned, job.done, job.skipped = outcome.planned, outcome.done, outcome.skipped
                self._finish(job, "done", None)

    def _finish(self, job: Job, state: str, error: Optional[str]) -> None:
        # the Event first, so whoever sees the job finished also finds its Event in the log
        self._event({"done": "job.finished", "failed": "job.failed", "cancelled": "job.cancelled"}[state], job,
                    state, error)
        with self._lock:
            job.state, job.error, job.finished_at = state, error, time.time()
