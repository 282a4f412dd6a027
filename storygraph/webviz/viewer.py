"""The viewer service the blueprints share: :class:`Viewer` (store, engine, token, event hub, worker, graph cache),
``viewer_of(app)`` to find it, and ``error`` for JSON error answers.

It sits beside the blueprints (``api``, ``pages``, ``stream``) so that they import it and the app factory
imports them, never the other way round. Building a Viewer starts no thread: :meth:`Viewer.start` does (the
event hub's poller and the graph warm-up), called by whatever serves the app.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

from flask import Flask, current_app, jsonify

from .events import EventHub
from .graph import MediaLinks, build_graph, dumps, scene_element
from .security import LOOPBACK_NAMES
from .worker import GenerationWorker

log = logging.getLogger(__name__)

EXTENSION = "storygraph"


@dataclass
class ViewerConfig:
    query_timeout_s: float = 5.0  # the Cypher console's time limit
    max_query_rows: int = 1000  # rows the console returns at most
    replay_limit: int = 500  # a client further behind than this gets a reset event
    keepalive_s: float = 15.0  # SSE comment when nothing else was sent for this long
    retry_ms: int = 2000  # the SSE retry: hint
    poll_s: float = 0.1  # how often the Event log is read
    big_scenes: int = 1500  # above this many scenes the page loads progressively and leaves out APPEARS_IN edges
    dagre_max_scenes: int = 400  # up to this many scenes the browser lays the timeline out with dagre
    graph_cache_s: Optional[float] = 300.0  # also rebuild the graph JSON this often (writes made without an Event)
    max_takes: int = 16  # "generate N takes" at most
    allowed_hosts: Optional[tuple] = LOOPBACK_NAMES  # Host header names answered; None: any
    warm: bool = True  # on start, build the graph JSON in the background so the first page load finds it ready


#: Events after which the cached graph is patched (the scenes they name) instead of rebuilt.
PATCHABLE_EVENTS = frozenset({"take.committed", "take.chosen", "scene.generating", "scene.done", "scene.failed",
                              "scene.stage", "scene.stale", "scene.interrupted"})
PATCH_MAX_EVENTS = 200


def _dumps(value) -> bytes:
    return dumps(value, separators=(",", ":")).encode("utf-8")


class _Cached:
    """The graph dict plus each node and edge already encoded, so a patch re-encodes only what changed."""

    def __init__(self, seq: int, built: float, data: dict, node_parts: list, edge_parts: list,
                 index: Optional[dict] = None):
        self.seq = seq
        self.built = built  # time.monotonic() of the last full build
        self.data = data
        self.node_parts = node_parts
        self.edge_parts = edge_parts
        self._index = index
        self._body: Optional[bytes] = None
        self._lock = threading.Lock()

    def scene_index(self) -> dict:
        if self._index is None:
            self._index = {n["data"]["id"]: i for i, n in enumerate(self.data["nodes"]) if n["data"]["type"] == "scene"}
        return self._index

    def body(self) -> bytes:
        with self._lock:
            if self._body is None:
                meta = {k: v for k, v in self.data.items() if k not in ("nodes", "edges")}
                self._body = b"".join([_dumps(meta)[:-1], b',"nodes":[', b",".join(self.node_parts),
                                       b'],"edges":[', b",".join(self.edge_parts), b"]}"])
            return self._body


class Viewer:
    """What the blueprints share: store, engine, token, event hub, worker, graph cache."""

    def __init__(self, store, engine, token: str, media: MediaLinks, config: ViewerConfig):
        self.store = store
        self.engine = engine
        self.token = token
        self.media = media
        self.config = config
        self.hub = EventHub(store, poll_s=config.poll_s)
        self.worker = None
        if engine is not None:
            self.worker = GenerationWorker(engine, store, on_change=self.poke)
        self._cache_lock = threading.Lock()  # guards _cache and _generation (held briefly)
        self._build_lock = threading.Lock()  # one build or patch at a time
        self._cache: Optional[_Cached] = None
        self._generation = 0  # bumped by edits made here, so a build racing an edit is not kept
        self._refreshing = False

    @property
    def editable(self) -> bool:
        return self.engine is not None

    def poke(self) -> None:
        """Read the Event log now (after an Event written from this process)."""
        try:
            self.hub.poke()
        except Exception:
            log.exception("reading the event log failed")

    def changed(self) -> None:
        """Something was written from this process: drop the graph cache and read the log now."""
        with self._cache_lock:
            self._cache = None
            self._generation += 1
        try:
            self.hub.poke()
        except Exception:
            log.exception("reading the event log failed")

    def graph(self) -> tuple[dict, bytes]:
        """The graph JSON (dict and encoded body) as of the Event log's last seq.

        Served from a cache; take and status events patch the scenes they name, anything else (new
        scenes, edits, transitions) rebuilds it. Past ``graph_cache_s`` the cached one is served while
        a rebuild runs in the background (catching writes made without an Event).
        """
        c = self._current()
        return c.data, c.body()

    def graph_data(self) -> dict:
        """The graph dict as cached, without waiting for events newer than the cache (panels that need the
        story's structure, not the latest statuses)."""
        with self._cache_lock:
            c = self._cache
        return c.data if c is not None else self._current().data

    def _current(self) -> "_Cached":
        seq = int(self.store.last_event_seq())
        with self._cache_lock:
            c = self._cache
        if c is not None and c.seq == seq:
            if self.config.graph_cache_s is not None and time.monotonic() - c.built > self.config.graph_cache_s:
                self._refresh_in_background()
            return c
        with self._build_lock:
            with self._cache_lock:
                c = self._cache
                generation = self._generation
            if c is not None and c.seq >= seq:
                return c
            seq = int(self.store.last_event_seq())
            fresh = (self._patched(c, seq) if c is not None else None) or self._built(seq)
            with self._cache_lock:
                if generation == self._generation:
                    self._cache = fresh
            return fresh

    def _built(self, seq: int) -> "_Cached":
        data = build_graph(self.store, self.media, big_scenes=self.config.big_scenes,
                           dagre_max_scenes=self.config.dagre_max_scenes, editable=self.editable, last_seq=seq)
        return _Cached(seq, time.monotonic(), data, [_dumps(n) for n in data["nodes"]],
                       [_dumps(e) for e in data["edges"]])

    def _patched(self, c: "_Cached", seq: int) -> Optional["_Cached"]:
        """The cached graph with the scenes named by the events since it was built brought up to date, or
        None when those events may have changed more than scenes' status and media."""
        events = self.store.events_since(c.seq, limit=PATCH_MAX_EVENTS + 1)
        if len(events) > PATCH_MAX_EVENTS or any(e.seq > seq for e in events):
            return None
        index = c.scene_index()
        scene_ids = []
        for e in events:
            if e.kind.startswith("job."):
                continue
            if e.kind not in PATCHABLE_EVENTS or e.ref_id not in index:
                return None
            if e.ref_id not in scene_ids:
                scene_ids.append(e.ref_id)
        nodes = list(c.data["nodes"])
        node_parts = list(c.node_parts)
        edges, edge_parts = c.data["edges"], c.edge_parts
        for sid in scene_ids:
            el = scene_element(self.store, self.media, sid)
            if el is None:
                return None
            i = index[sid]
            node = dict(el["node"])
            node["position"] = nodes[i]["position"]
            nodes[i] = node
            node_parts[i] = _dumps(node)
            if not c.data["big"]:
                edges = [e for e in edges if not (e["data"]["type"] == "appears" and e["data"]["target"] == sid)]
                edges += el["edges"]
        if edges is not c.data["edges"]:
            edge_parts = [_dumps(e) for e in edges]
        data = {**c.data, "nodes": nodes, "edges": edges, "last_seq": seq}
        return _Cached(seq, c.built, data, node_parts, edge_parts, index)

    def _refresh_in_background(self) -> None:
        with self._cache_lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run():
            try:
                seq = int(self.store.last_event_seq())
                with self._build_lock:
                    with self._cache_lock:
                        generation = self._generation
                    fresh = self._built(seq)
                    with self._cache_lock:
                        if generation == self._generation:
                            self._cache = fresh
            except Exception:
                log.exception("rebuilding the graph failed")
            finally:
                with self._cache_lock:
                    self._refreshing = False
        threading.Thread(target=run, name="storygraph-graph", daemon=True).start()

    def start(self) -> None:
        """Start following the Event log and, with ``config.warm``, build the graph JSON in the background."""
        self.hub.start()
        if self.config.warm:
            self.warm()

    def warm(self) -> None:
        """Build the graph JSON in the background so the first page load finds it ready."""
        def run():
            try:
                self.graph()
            except Exception:
                log.exception("building the graph failed")
        threading.Thread(target=run, name="storygraph-warm", daemon=True).start()

    def close(self) -> None:
        self.hub.close()
        if self.worker is not None:
            self.worker.close()


def viewer_of(app: Flask) -> Viewer:
    return app.extensions[EXTENSION]


def current_viewer() -> Viewer:
    """The viewer of the app handling the current request."""
    return viewer_of(current_app)


def error(status: int, message: str, **extra):
    """A JSON error answer: ``{"error": message, "status": status, ...extra}``."""
    body = {"error": message, "status": status}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp
