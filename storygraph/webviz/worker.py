"""The one background worker that runs ``engine.generate`` for the viewer: one generation at a time.

Requests queue up; the worker writes ``job.queued`` / ``job.started`` / ``job.finished`` / ``job.failed``
Events so every viewer following the log (this one included) shows progress; the engine writes its own
scene and take Events as it goes.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from ..errors import Conflict, Unavailable

log = logging.getLogger(__name__)


class JobConflict(Conflict):
    """The scene already has a generation queued or running."""


@dataclass
class Job:
    id: int
    scene_id: str
    takes: int
    state: str = "queued"  # queued | running | done | failed
    error: Optional[str] = None
    queued_at: float = field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


class GenerationWorker:
    def __init__(self, engine, store, on_change: Optional[Callable[[], None]] = None, keep: int = 200):
        self.engine = engine
        self.store = store
        self.on_change = on_change
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._keep = keep
        self._closed = False

    def submit(self, scene_id: str, takes: int = 1) -> Job:
        with self._lock:
            if self._closed:
                raise Unavailable("the generation worker is shut down")
            for j in self._jobs.values():
                if j.scene_id == scene_id and j.state in ("queued", "running"):
                    raise JobConflict(f"scene {scene_id!r} already has generation job {j.id} {j.state}")
            job = Job(next(self._ids), scene_id, int(takes))
            self._jobs[job.id] = job
            self._trim()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="storygraph-generate", daemon=True)
                self._thread.start()
        self._event("job.queued", job)
        self._queue.put(job)
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
            return any(j.state in ("queued", "running") for j in self._jobs.values())

    def close(self, wait: float = 0.0) -> None:
        """Take no more jobs; the running one (if any) finishes in the background."""
        with self._lock:
            self._closed = True
        self._queue.put(None)
        if wait and self._thread is not None:
            self._thread.join(wait)

    def _trim(self) -> None:
        done = [j.id for j in self._jobs.values() if j.state in ("done", "failed")]
        for jid in done[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[jid]

    def _event(self, kind: str, job: Job) -> None:
        payload = {"job": job.id, "takes": job.takes, "state": job.state}
        if job.error:
            payload["error"] = job.error
        try:
            self.store.append_event(kind, job.scene_id, payload)
        except Exception:  # a progress note must never stop the work itself
            log.exception("could not record %s for job %s", kind, job.id)
        if self.on_change is not None:
            self.on_change()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                job.state = "running"
                job.started_at = time.time()
            self._event("job.started", job)
            try:
                self.engine.generate(job.scene_id, takes=job.takes)
            except Exception as e:
                log.error("generating %s failed:\n%s", job.scene_id, traceback.format_exc())
                self._finish(job, "failed", f"{type(e).__name__}: {e}")
            else:
                self._finish(job, "done", None)

    def _finish(self, job: Job, state: str, error: Optional[str]) -> None:
        # the Event first, so whoever sees the job finished also finds its Event in the log
        done = Job(job.id, job.scene_id, job.takes, state, error, job.queued_at, job.started_at, time.time())
        self._event("job.finished" if state == "done" else "job.failed", done)
        with self._lock:
            job.state, job.error, job.finished_at = state, error, done.finished_at
