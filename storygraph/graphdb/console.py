"""The second guard on console Cypher for the embedded database: a throwaway child process that can only read.

LadybugDB parses, binds and runs a query inside the calling process, and some inputs do harm there before
any result comes back: ``CALL READ_PARQUET(…)`` on a file that is not Parquet segfaults while binding, deep
nesting parses for minutes, table functions and ``LOAD FROM`` read files, ``COPY … TO`` writes them, and a
``COMMIT`` inside a multi-statement string ends a READ ONLY transaction. So a console query never runs in the
process that owns the story. It runs in a child forked for that one query, which

* takes away its own filesystem and network access with Landlock (where the kernel has it) before it opens
  anything, keeping only the right to read the database file — no other file can be read, created or
  written, by the query or by anything it makes the engine do; it also may not write any file at all
  (``RLIMIT_FSIZE = 0``) and leaves no core dump;
* opens the database read-only (a second handle, so the owner's transactions and lock are not involved);
* prepares the query first: LadybugDB refuses to prepare more than one statement, so a ``;`` split is
  refused before anything executes, and what runs is exactly the prepared statement;
* fetches at most ``max_rows + 1`` rows and sends them back as JSON (never pickles), then exits.

The parent kills the child when the time limit passes — parsing included — and a crash of the engine on a
query kills only the child. The owner of the database (see ``EmbeddedStore.console_fence``) checkpoints
before the child opens and holds further checkpoints until it ends, so the child reads a consistent file
while the engine goes on committing.

This guard does not rely on the first one (``readonly.py``); tests run each alone.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

from .store import QueryError, QueryResult, ReadOnlyViolation

#: Bytes of JSON a console result may carry back; past it the rows are cut and ``truncated`` is set.
MAX_RESULT_BYTES = 32 << 20
#: The child's buffer pool: console queries read a story, they do not need most of the machine's memory.
CHILD_BUFFER_POOL = 256 << 20
#: Address space the child may map besides the buffer pool (a query building a huge list fails cleanly).
CHILD_DATA_LIMIT = 4 << 30

@dataclass(frozen=True)
class ConsoleLimits:
    timeout_s: float
    max_rows: int
    max_result_bytes: int = MAX_RESULT_BYTES


def check_timeout(timeout_s: Any) -> float:
    """A console time limit: a finite number of seconds, at least a millisecond and at most an hour."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) \
            or not 0.001 <= timeout_s <= 3600:
        raise QueryError(f"the time limit must be a number of seconds from 0.001 to 3600, got {timeout_s!r}")
    return float(timeout_s)


def check_max_rows(max_rows: Any) -> int:
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= 1_000_000:
        raise QueryError(f"the row limit must be an integer from 1 to 1000000, got {max_rows!r}")
    return max_rows


def check_params(params: Any) -> dict:
    """Query parameters: a mapping of names to JSON values (what the console and the API can send)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise QueryError("parameters must be a mapping of names to values")
    for k in params:
        if not isinstance(k, str) or not k or not (k[0].isalpha() or k[0] == "_") \
                or not all(c.isalnum() or c == "_" for c in k) or not k.isascii():
            raise QueryError(f"parameter name {k!r}: expected letters, digits and '_'")
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise QueryError(f"parameters must be JSON values (numbers finite): {e}") from None
    return params


class _Zygote:
    """A small server process that imported LadybugDB but never opened a database; it forks one child per query.

    Forking from it costs milliseconds where a fresh interpreter costs a quarter of a second, and the child
    copies nothing from the owner (no open database, no threads, no ``__main__`` of the caller's).
    """

    def __init__(self):
        import socket
        import subprocess
        import sys

        import storygraph

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        root = str(Path(storygraph.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "storygraph.graphdb.console", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.ctrl = ours
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, fd: int) -> int:
        """Fork a child that answers on ``fd``; returns its pid."""
        import socket

        with self.lock:
            socket.send_fds(self.ctrl, [b"fork"], [fd])
            reply = self.ctrl.recv(64)
        if not reply:
            raise QueryError("the console's query process is gone; try again")
        return int(reply)

    def close(self) -> None:
        try:
            self.ctrl.close()
        finally:
            try:
                self.proc.wait(2)
            except Exception:  # noqa: BLE001
                self.proc.kill()


_zygote: Optional[_Zygote] = None
_zygote_lock = threading.Lock()


def _get_zygote() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive():
            _zygote = _Zygote()
        return _zygote


def run(db_file, cypher: str, params: dict, limits: ConsoleLimits,
        fence: Optional[Callable[[], ContextManager]] = None) -> QueryResult:
    """Run one console query on the database at ``db_file`` in a sandboxed child; see the module docstring.

    ``fence``: the owner's ``console_fence`` (a context manager factory). It is entered before the child starts;
    the callable it yields is called once the child has the database open, and it is left when the child is gone.
    """
    import socket

    zygote = _get_zygote()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fence_cm = fence() if fence is not None else None
    pid = None
    try:
        opened = fence_cm.__enter__() if fence_cm is not None else None
        deadline = time.monotonic() + limits.timeout_s
        pid = zygote.fork(theirs.fileno())
        theirs.close()
        _write(ours, {"db_file": str(db_file), "cypher": cypher, "params": params, "timeout_s": limits.timeout_s,
                      "max_rows": limits.max_rows, "max_bytes": limits.max_result_bytes})
        message = _receive(ours, deadline, limits.timeout_s)
        if message.get("opened"):
            if opened is not None:
                opened()
            message = _receive(ours, deadline, limits.timeout_s)
        return _result(message)
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)  # gone already in the usual case; the zygote reaps it
            except ProcessLookupError:
                pass
        theirs.close()
        ours.close()
        if fence_cm is not None:
            fence_cm.__exit__(None, None, None)


def _write(sock, message: dict) -> None:
    data = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    sock.sendall(len(data).to_bytes(4, "big") + data)


def _read_exact(sock, n: int, deadline: Optional[float]) -> bytes:
    import select

    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                raise TimeoutError
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _read(sock, deadline: Optional[float]) -> dict:
    size = int.from_bytes(_read_exact(sock, 4, deadline), "big")
    return json.loads(_read_exact(sock, size, deadline))


def _receive(sock, deadline: float, timeout_s: float) -> dict:
    try:
        return _read(sock, deadline)
    except TimeoutError:
        raise QueryError(f"query stopped after its time limit of {timeout_s:g} s") from None
    except (EOFError, OSError, ValueError):
        raise QueryError("the database engine stopped on this query without an answer (it crashed or ran out "
                         "of memory); nothing was changed — this query cannot be run here") from None


def _result(message: dict) -> QueryResult:
    if message.get("ok"):
        return QueryResult(message["columns"], message["rows"], truncated=bool(message.get("truncated")))
    kind, text = message.get("kind"), message.get("error", "query failed")
    if kind == "refused":
        raise ReadOnlyViolation(f"read-only query refused: {text}")
    raise QueryError(text)


# -- the child ------------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):  # LadybugDB's INT128 (e.g. sum of INT64) and DECIMAL
        return int(v) if v == v.to_integral_value() and abs(v) < 2**63 else float(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return str(v)


def _failure(msg: str, timeout_s: float) -> dict:
    """An engine error as the parent should report it: refusals apart from ordinary query errors."""
    low = msg.lower()
    if "multiple statements" in low:
        return {"ok": False, "kind": "refused", "error": "several statements"}
    if "read-only" in low or "read only" in low:
        return {"ok": False, "kind": "refused", "error": msg}
    if "permission denied" in low or "cannot open file" in low:
        return {"ok": False, "kind": "refused",
                "error": "the query tried to reach a file; the console only reads the story's graph"}
    if msg.strip() == "Interrupted.":
        return {"ok": False, "kind": "error", "error": f"query stopped after its time limit of {timeout_s:g} s"}
    if "bad_alloc" in low or "out of memory" in low:
        return {"ok": False, "kind": "error", "error": f"the query needs more memory than the console allows ({msg})"}
    return {"ok": False, "kind": "error", "error": msg}


def _child(sock) -> None:  # pragma: no cover - runs in the child process
    import resource
    import warnings

    import ladybug

    from . import landlock

    warnings.simplefilter("ignore")
    timeout_s = 0.0
    try:
        req = _read(sock, None)
        db_file, cypher, params = req["db_file"], req["cypher"], req["params"]
        timeout_s, max_rows, max_bytes = float(req["timeout_s"]), int(req["max_rows"]), int(req["max_bytes"])
        signal.alarm(int(timeout_s) + 2)  # a backstop: the parent kills it at the deadline anyway
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead
        readable = [p for p in (db_file, db_file + ".wal") if os.path.isfile(p)]
        if landlock.available():
            landlock.restrict_to_reading(readable)
        # the engine reserves address space for the whole database (8 TiB unless told): reserve what this
        # file needs, so that a data limit can stop a query that builds something huge
        max_db = 1 << 30
        while max_db < 2 * os.path.getsize(db_file):
            max_db <<= 1
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = max_db + CHILD_BUFFER_POOL + CHILD_DATA_LIMIT
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        db = ladybug.Database(db_file, read_only=True, buffer_pool_size=CHILD_BUFFER_POOL, max_num_threads=2,
                              max_db_size=max_db, backend="pybind")
        con = ladybug.Connection(db)
        con.set_query_timeout(max(1, int(timeout_s * 1000)))
        _write(sock, {"opened": True})
        prepared = con._prepare(cypher)
        if not prepared.is_success():
            _write(sock, _failure(prepared.get_error_message(), timeout_s))
            os._exit(0)
        result = con.execute(prepared, params)
        if isinstance(result, list):  # cannot happen for one prepared statement; refuse rather than guess
            _write(sock, {"ok": False, "kind": "refused", "error": "several statements"})
            os._exit(0)
        columns = list(result.get_column_names())
        rows, size, truncated = [], 0, False
        while result.has_next():
            if len(rows) == max_rows:
                truncated = True
                break
            row = _jsonable(list(result.get_next()))
            size += len(json.dumps(row, ensure_ascii=False))
            if size > max_bytes:
                truncated = True
                break
            rows.append(row)
        _write(sock, {"ok": True, "columns": columns, "rows": rows, "truncated": truncated})
    except MemoryError:
        _write(sock, {"ok": False, "kind": "error", "error": "the query needs more memory than the console allows"})
    except RuntimeError as e:
        _write(sock, _failure(str(e), timeout_s))
    except Exception as e:  # noqa: BLE001 - the parent gets a message, never a traceback
        _write(sock, {"ok": False, "kind": "error", "error": f"{type(e).__name__}: {e}"})
    finally:
        sock.close()
    os._exit(0)


def _serve(ctrl_fd: int) -> None:  # pragma: no cover - the zygote process
    """The zygote's loop: one ``fork`` message (carrying the query socket) in, the child's pid out."""
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    ctrl = socket.socket(fileno=ctrl_fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 64, 1)
        except OSError:
            return
        if not msg:
            return
        pid = os.fork()
        if pid == 0:
            ctrl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _child(socket.socket(fileno=fds[0]))
            os._exit(0)
        for fd in fds:
            os.close(fd)
        ctrl.send(str(pid).encode())


if __name__ == "__main__":  # pragma: no cover
    import sys

    import importlib

    # everything a child will need, imported once here, before any fork: after Landlock it could not be read
    for name in ("ladybug", "ladybug.connection", "ladybug.query_result", "ladybug.prepared_statement", "datetime",
                 "decimal", "resource", "warnings", "select", "storygraph.graphdb.landlock"):
        importlib.import_module(name)
    from ladybug._backend import get_pybind_module

    get_pybind_module()  # loads the native extension the way ladybug itself does
    _serve(int(sys.argv[1]))
