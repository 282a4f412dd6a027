"""Running the viewer: a threaded werkzeug server bound to loopback unless told otherwise.

Each open event stream holds a server thread, so the server is threaded. ``serve`` prints the URL with
the token and runs until interrupted; ``start`` runs it in a daemon thread (tests and benchmarks) and
returns a handle whose ``stop()`` ends the streams, then the server. Both start the viewer's own threads
(the event hub and the graph warm-up) just before serving: the app factory starts none.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, Optional

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server as _werkzeug_server

from ..errors import InvalidInput
from .security import LOOPBACK_NAMES, is_loopback_host
from .viewer import viewer_of


class RemoteBindRefused(InvalidInput, ValueError):
    """A non-loopback address was asked for without ``allow_remote=True``: the input lacks a flag, so the CLI
    answers it as a usage problem (exit 2)."""


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        pass


def make_server(app, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
                quiet: bool = False) -> BaseWSGIServer:
    """A threaded server for ``app`` on ``host:port`` (port 0: any free port); refuses a non-loopback host
    (``0.0.0.0``, ``::``, a LAN address or name) unless ``allow_remote``."""
    if not is_loopback_host(host):
        if not allow_remote:
            raise RemoteBindRefused(
                f"refusing to listen on {host!r}: the viewer binds to loopback (127.0.0.1) unless remote access is "
                "asked for explicitly (allow_remote=True / --allow-remote); anyone who can reach it and holds the "
                "token can edit and generate")
        cfg = viewer_of(app).config
        if cfg.allowed_hosts is not None and tuple(cfg.allowed_hosts) == tuple(LOOPBACK_NAMES):
            cfg.allowed_hosts = None  # reached under names we cannot know; the token still guards writes
    return _werkzeug_server(host, int(port), app, threaded=True, request_handler=_QuietHandler if quiet else None)


def viewer_url(server: BaseWSGIServer, token: Optional[str] = None) -> str:
    host = server.host
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    url = f"http://{host}:{server.port}/"
    return f"{url}?token={token}" if token else url


class RunningServer:
    """A viewer served from a daemon thread."""

    def __init__(self, app, server: BaseWSGIServer):
        self.app = app
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="storygraph-viewer", daemon=True)

    @property
    def url(self) -> str:
        return viewer_url(self.server)

    @property
    def token(self) -> str:
        return self.app.config["STORYGRAPH_TOKEN"]

    def stop(self) -> None:
        viewer_of(self.app).close()  # ends open event streams first, so shutdown does not wait on them
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start(app, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False, quiet: bool = True) -> RunningServer:
    """Serve ``app`` from a daemon thread; returns at once (no request log unless ``quiet=False``)."""
    rs = RunningServer(app, make_server(app, host, port, allow_remote, quiet=quiet))
    viewer_of(app).start()
    rs.thread.start()
    return rs


def serve(app, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
          announce: Optional[Callable[[str], None]] = None, quiet: bool = False) -> None:
    """Serve ``app`` until interrupted (Ctrl-C), announcing the URL with its token first."""
    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    server = make_server(app, host, port, allow_remote, quiet=quiet)
    token = app.config["STORYGRAPH_TOKEN"]
    if not is_loopback_host(host):
        say(f"warning: listening on {host} — reachable from other machines")
    say(f"storygraph viewer: {viewer_url(server, token)}")
    say(f"token (header X-Storygraph-Token for edits and generation): {token}")
    viewer_of(app).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        viewer_of(app).close()
        server.server_close()
