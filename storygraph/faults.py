"""Fault points for crash and disk-full tests; unset (always, outside tests) each costs one environment lookup.

Crash points: ``STORYGRAPH_CRASH_AT=<name>`` kills the process with SIGKILL at that point. The engine and the
store call ``crash_point`` at the boundaries whose recovery the tests prove: before generating, after
generating and before the commit, while a take's media are written (between the video and the last frames) and
once they are written, inside the commit transaction, after the commit and before the vector index is saved.
``STORYGRAPH_CRASH_SKIP=n`` lets the first ``n`` passes through the point go by, so a run can be killed in the
middle of a story. Unset (always, outside tests) it costs one environment lookup.

Write points: every place storygraph writes a file calls ``write_point`` first (``media``: videos and
frames; ``index``: the vector index files; ``graph``: a graph commit). ``STORYGRAPH_FULL_AFTER=n`` makes the
disk full after ``n`` writes: from then on every write raises ``OSError(ENOSPC)`` as a full file system does,
until the process ends; ``STORYGRAPH_FULL_FROM=<text>`` makes it full from the first write whose path holds
``<text>`` (media are written on a background thread too, so a count of writes does not name one write from
run to run; a path does). ``STORYGRAPH_FULL_AT=media,index`` limits either to those points;
``STORYGRAPH_FULL_ERRNO=EACCES`` (or ``EROFS``) fails them as an unwritable folder instead.
``STORYGRAPH_WRITES_LOG=file`` appends each write (point and path) to ``file``, to choose where to fail.
"""

from __future__ import annotations

import errno
import os
import threading

POINTS = ("before_generate", "after_generate", "during_media", "after_media", "during_commit", "after_commit",
          "after_index")
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    if os.environ.get("STORYGRAPH_CRASH_AT") != name:
        return
    seen = _passes.get(name, 0)
    _passes[name] = seen + 1
    if seen >= int(os.environ.get("STORYGRAPH_CRASH_SKIP", "0")):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


WRITE_POINTS = ("media", "index", "graph")
_writes = [0]
_full = [False]
_lock = threading.Lock()


def write_point(name: str, path: object = None) -> None:
    """Raise the ``OSError`` a full (or unwritable) disk would, when the environment says so (see above)."""
    log = os.environ.get("STORYGRAPH_WRITES_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{name} {path if path is not None else ''}\n")
    after = os.environ.get("STORYGRAPH_FULL_AFTER")
    start = os.environ.get("STORYGRAPH_FULL_FROM")
    if after is None and start is None:
        return
    only = os.environ.get("STORYGRAPH_FULL_AT")
    if only and name not in only.split(","):
        return
    with _lock:  # media are written on a background thread too
        if start is not None:
            _full[0] = _full[0] or start in str(path if path is not None else name)
            full = _full[0]
        else:
            _writes[0] += 1
            full = _writes[0] > int(after)
    if full:
        code = getattr(errno, os.environ.get("STORYGRAPH_FULL_ERRNO", "ENOSPC"))
        raise OSError(code, os.strerror(code), str(path) if path is not None else name)
