"""One generation at a time per story folder: a thread lock inside this process, a file lock across processes.

The file lock (``<story dir>/.generate.lock``, ``flock``) is taken by the first generation and held until the
engine closes, so a second process opening the same story for generation is refused at once rather than
interleaving its takes with ours. The kernel drops it when the process dies, so a crash never leaves it held.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .errors import GenerationBusy

LOCK_NAME = ".generate.lock"


class GenerationLock:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._thread_lock = threading.Lock()
        self._file = None  # open while this process holds the story

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the story for one generation; :class:`GenerationBusy` when someone else does."""
        if not self._thread_lock.acquire(blocking=False):
            raise GenerationBusy("a generation is already running for this story")
        try:
            if self._file is None:
                self._file = self._take_file_lock()
            yield
        finally:
            self._thread_lock.release()

    def idle(self) -> bool:
        """Whether no process (this one included) is generating scenes of this story now: the file lock is free,
        or this process holds it and no generation runs in it."""
        if not self._thread_lock.acquire(blocking=False):
            return False
        try:
            if self._file is not None:
                return True
            try:
                f = self._take_file_lock()
            except GenerationBusy:
                return False
            f.close()
            return True
        finally:
            self._thread_lock.release()

    def _take_file_lock(self):
        import fcntl

        f = open(self.folder / LOCK_NAME, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            raise GenerationBusy(f"another process is generating scenes of {self.folder}") from e
        return f

    def release(self) -> None:
        f: Optional[object] = self._file
        self._file = None
        if f is not None:
            f.close()
