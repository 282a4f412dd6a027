"""Reading a story that another process holds open: ask that process.

LadybugDB lets one process open a database for writing, and opening it read-only beside that writer is not
reliable (the open fails while a checkpoint is pending, and can read a log being written). So a process that
holds an embedded story for a long time (``storygraph run``, ``resume``, ``studio``) serves a small HTTP API on
127.0.0.1 and names it in ``<story>/.storygraph-holder.json`` (mode 0600, with a random token):

* ``POST /query`` runs a console query there, through the same two guards as anywhere else;
* ``POST /snapshot`` writes a consistent copy of the graph file (under the store's console fence) into
  ``<story>/.snapshots/<id>/`` for the caller to open read-only and delete when done.

``storygraph query`` uses the first; ``show``, ``report`` and ``export`` the second. Only loopback is bound,
every request must carry the token, and only these two routes exist.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Optional

from .store import QueryError, QueryResult, ReadOnlyViolation, StoreError

HOLDER_FILE = ".storygraph-holder.json"
SNAPSHOTS = ".snapshots"
TOKEN_HEADER = "X-Storygraph-Token"
MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(405, {"error": "POST only"})

    def do_POST(self) -> None:  # noqa: N802
        if not secrets.compare_digest(self.headers.get(TOKEN_HEADER, ""), self.server.token):
            return self._answer(401, {"error": "missing or wrong token"})
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_BODY:
            return self._answer(413, {"error": "body too large"})
        try:
            body = json.loads(self.rfile.read(size) or b"{}")
        except (ValueError, RecursionError):
            return self._answer(400, {"error": "expected a JSON object"})
        if not isinstance(body, dict):
            return self._answer(400, {"error": "expected a JSON object"})
        try:
            if self.path == "/query":
                r = self.server.store.query(body.get("cypher", ""), body.get("params"), read_only=True,
                                            timeout_s=body.get("timeout_s"), max_rows=body.get("max_rows"))
                return self._answer(200, {"columns": r.columns, "rows": r.rows, "truncated": r.truncated})
            if self.path == "/snapshot":
                return self._answer(200, {"path": str(self.server.snapshot())})
            return self._answer(404, {"error": "no such route"})
        except ReadOnlyViolation as e:
            return self._answer(403, {"error": str(e), "kind": "refused"})
        except StoreError as e:
            return self._answer(400, {"error": str(e), "kind": "error"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store, story_dir: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store
        self.story_dir = story_dir
        self.token = secrets.token_urlsafe(24)

    def snapshot(self) -> Path:
        dest = self.story_dir / SNAPSHOTS / secrets.token_hex(8)
        dest.mkdir(parents=True)
        with self.store.console_fence() as opened:
            opened()  # checkpointed, and no checkpoint until the copy is done: commits only append to the log
            shutil.copyfile(self.store.db_path, dest / "graph")
        return dest


class HolderService:
    """Serve ``store`` (an EmbeddedStore this process holds) to other local processes; see the module docstring."""

    def __init__(self, store, story_dir):
        self.story_dir = Path(story_dir)
        self._server = _Server(store, self.story_dir)
        self._thread = threading.Thread(target=self._server.serve_forever, name="storygraph-holder", daemon=True)
        self._file = self.story_dir / HOLDER_FILE

    def start(self) -> "HolderService":
        self._thread.start()
        shutil.rmtree(self.story_dir / SNAPSHOTS, ignore_errors=True)  # left by a process that died
        info = {"pid": os.getpid(), "port": self._server.server_address[1], "token": self._server.token}
        tmp = self._file.with_name(self._file.name + f".{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(tmp, self._file)
        return self

    def close(self) -> None:
        try:
            if json.loads(self._file.read_text()).get("pid") == os.getpid():
                self._file.unlink()
        except (OSError, ValueError):
            pass
        self._server.shutdown()
        self._server.server_close()


def holder_of(story_dir) -> Optional[dict]:
    """The serving process that holds ``story_dir`` ({pid, port, token}), or None."""
    try:
        info = json.loads((Path(story_dir) / HOLDER_FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _post(info: dict, route: str, body: dict, timeout_s: float) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(info["port"]), timeout=timeout_s)
    try:
        data = json.dumps(body).encode("utf-8")
        conn.request("POST", route, body=data, headers={"Content-Type": "application/json",
                                                        TOKEN_HEADER: str(info["token"])})
        resp = conn.getresponse()
        answer = json.loads(resp.read() or b"{}")
    except (OSError, ValueError) as e:
        raise StoreError(f"the process holding this story (pid {info.get('pid')}) did not answer: {e}") from e
    finally:
        conn.close()
    if resp.status == 403:
        raise ReadOnlyViolation(answer.get("error", "refused"))
    if resp.status != 200:
        raise QueryError(answer.get("error", f"HTTP {resp.status}"))
    return answer


def remote_query(info: dict, cypher: str, params: dict, timeout_s: float, max_rows: int) -> QueryResult:
    answer = _post(info, "/query", {"cypher": cypher, "params": params, "timeout_s": timeout_s,
                                    "max_rows": max_rows}, timeout_s + 10)
    return QueryResult(answer["columns"], answer["rows"], truncated=bool(answer.get("truncated")))


@contextmanager
def remote_snapshot(info: dict, story_dir) -> Iterator[Path]:
    """A consistent copy of the held story's graph, as a folder an EmbeddedStore opens read-only; removed after."""
    path = Path(_post(info, "/snapshot", {}, 120)["path"])
    root = (Path(story_dir) / SNAPSHOTS).resolve()
    if root not in path.resolve().parents:
        raise StoreError(f"the holding process named a snapshot outside {root}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
