"""Media writing off the critical path, and the takes waiting for it.

Writing a real-size take (H.264 mp4 with its AAC track, ``last.png`` and the last frames a continuous transition
extends from) takes about a second of CPU. :class:`MediaWriter` does it on a background thread while the engine
goes on: the next take, or the next scene's retrieval, text encoding and denoising. A take is committed to the graph
only once its files are on disk, so a crash while they are written leaves no committed take without its files;
the scene is simply not done, and ``resume`` makes it again.

Until then its scene is *in flight* (:class:`InFlight`): the frames the next scene extends from are handed over in
memory, and :class:`PendingView` lets retrieval see the story as it will be once the scene is committed (its
accepted appearances, and its use of the memories it was conditioned on), so memory works exactly as if each
scene were committed before the next one started.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from ..faults import crash_point

WRITER_MODES = ("background", "inline")


class MediaJob:
    """One take's media being written: :meth:`wait` returns its ``TakeMedia`` once the files are on disk (or
    raises what the writer raised). ``media`` holds the paths from the start; ``seconds`` the writing time."""

    def __init__(self, take_dir: Path, media):
        self.take_dir = take_dir
        self.media = media
        self.seconds = 0.0
        self._done = threading.Event()
        self._error: Optional[BaseException] = None

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self.media

    def _run(self, result, fps: float, last_n: int) -> None:
        from .media import write_take

        t = time.perf_counter()
        try:
            # samples=0: the observer samples frames in memory and writes the ones memory points at
            self.media = write_take(self.take_dir, result, fps=fps, last_n=last_n, samples=0)
            crash_point("after_media")
        except BaseException as e:  # handed to whoever waits
            self._error = e
        finally:
            self.seconds = time.perf_counter() - t
            self._done.set()


class MediaWriter:
    """Writes takes' media in submission order, on one background thread (``inline``: in the caller, at once)."""

    def __init__(self, mode: str = "background"):
        if mode not in WRITER_MODES:
            raise ValueError(f"media writer mode must be one of {WRITER_MODES}, got {mode!r}")
        self.mode = mode
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def submit(self, take_dir, result, fps: float, last_n: int) -> MediaJob:
        """Start writing ``result`` (frames, audio) as a take under ``take_dir``."""
        from .media import planned_take

        job = MediaJob(Path(take_dir), planned_take(take_dir, result, fps))
        if self.mode == "inline":
            job._run(result, fps, last_n)
            return job
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="storygraph-media-writer", daemon=True)
            self._thread.start()
        self._queue.put((job, result, fps, last_n))
        return job

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, result, fps, last_n = item
            job._run(result, fps, last_n)

    def close(self) -> None:
        """Finish what was submitted and stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._thread = None


@dataclass
class InFlight:
    """A scene whose takes are made and observed, waiting for their media before the commit."""

    work: Any  # the engine's SceneWork
    outcomes: list  # TakeOutcome per take
    best: Any  # the chosen TakeOutcome
    jobs: list  # MediaJob per take this run made
    last_frames: list  # the chosen take's last frames (uint8 arrays, oldest first)
    progress: Any = None
    uses: dict = field(default_factory=dict)  # appearance id -> (scene id, identity): the uses the commit records

    @property
    def scene_id(self) -> str:
        return self.work.scene.id

    def accepted_appearances(self) -> list:
        """The appearances the commit will accept: the chosen take's (a take this run made)."""
        if self.best.recovered or self.best.commit is None:
            return []
        return [replace(a, accepted=True) for a in self.best.commit.appearances]


class PendingView:
    """The store as retrieval reads it: the graph, plus what the scene in flight will commit.

    Everything but :meth:`appearances` goes straight to the store.
    """

    def __init__(self, store):
        self.store = store
        self._apps: dict[str, Any] = {}
        self._uses: dict[str, tuple] = {}

    def hold(self, appearances, uses) -> None:
        """``appearances``: what the scene in flight will add; ``uses``: ``appearance id -> (scene id, identity)``,
        the use it makes of each memory (an entry of ``Appearance.uses``)."""
        self._apps = {a.id: a for a in appearances}
        self._uses = dict(uses)

    def clear(self) -> None:
        self._apps, self._uses = {}, {}

    def __getattr__(self, name):
        return getattr(self.store, name)

    def appearances(self, ids=None, character_id=None, accepted_only: bool = True, with_vectors: bool = True,
                    scene_id=None) -> list:
        if not self._apps and not self._uses:
            return self.store.appearances(ids=ids, character_id=character_id, accepted_only=accepted_only,
                                          with_vectors=with_vectors, scene_id=scene_id)
        wanted = None if ids is None else list(ids)
        from_store = None if wanted is None else [i for i in wanted if i not in self._apps]
        out = [] if from_store == [] else self.store.appearances(
            ids=from_store, character_id=character_id, accepted_only=accepted_only, with_vectors=with_vectors,
            scene_id=scene_id)
        for a in self._apps.values():
            if wanted is not None and a.id not in wanted:
                continue
            if (character_id is not None and a.character_id != character_id) or (
                    scene_id is not None and a.scene_id != scene_id):
                continue
            out.append(a if with_vectors else replace(a, clip=[], dino=[]))
        return [self._used(a) if a.id in self._uses else a for a in out]

    def _used(self, a):
        scene_id, identity = self._uses[a.id]
        return replace(a, uses=[u for u in a.uses if u[0] != scene_id] + [(scene_id, identity)])
