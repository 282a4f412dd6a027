"""Crash points for crash tests: ``STORYGRAPH_CRASH_AT=<name>`` kills the process with SIGKILL at that point.

The engine and the store call ``crash_point`` at the boundaries whose recovery the tests prove: before
generating, after generating and before the commit, while a take's media are written (between the video and the
last frames) and once they are written, inside the commit transaction, after the commit and before the vector
index is saved. ``STORYGRAPH_CRASH_SKIP=n`` lets the first ``n`` passes through the point
go by, so a run can be killed in the middle of a story. Unset (always, outside tests) it costs one
environment lookup.
"""

from __future__ import annotations

import os

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
