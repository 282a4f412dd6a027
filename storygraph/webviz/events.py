"""Server-Sent Events fed by the story's Event log.

One :class:`EventHub` per app follows the log: a poller thread reads ``events_since(last seq)`` every
``poll_s`` and wakes every open stream; a stream therefore costs a waiting thread, not a database
query. A stream's event ``id`` is the Event ``seq``, so a browser that reconnects (``Last-Event-ID``
header, or ``?lastEventId=`` when the page recreates its EventSource) gets exactly what it missed. A
client more than ``replay_limit`` events behind gets one ``reset`` event instead and reloads the graph.
The same path serves the embedded store (engine in this process) and Neo4j (engines elsewhere).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Iterator, Optional

from .graph import dumps

log = logging.getLogger(__name__)


def event_dict(e) -> dict:
    try:
        payload = json.loads(e.payload) if e.payload else {}
    except ValueError:
        payload = {"raw": e.payload}
    return {"seq": int(e.seq), "kind": e.kind, "ref_id": e.ref_id, "at": e.at, "payload": payload}


def sse_message(data: dict, event_id: Optional[int] = None, event: Optional[str] = None) -> str:
    lines = []
    if event:
        lines.append(f"event: {event}")
    if event_id is not None:
        lines.append(f"id: {int(event_id)}")
    lines.append("data: " + dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


class EventHub:
    """Follows the Event log and hands new events to every open stream."""

    def __init__(self, store, poll_s: float = 0.1, buffer: int = 4096):
        self.store = store
        self.poll_s = float(poll_s)
        self._cond = threading.Condition()
        self._recent: deque = deque(maxlen=max(16, int(buffer)))  # event dicts, ascending seq
        self._last_seq = int(store.last_event_seq())
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self.clients = 0
        self.poll_errors = 0

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._last_seq

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="storygraph-events", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop polling and end every open stream (do this before shutting the server down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)

    def poke(self) -> None:
        """Poll now (after a write made in this process) instead of at the next tick."""
        self.poll_once()

    def poll_once(self) -> int:
        """Read new events from the store; return how many arrived."""
        with self._cond:
            since = self._last_seq
        events = self.store.events_since(since, limit=1000)
        if not events:
            return 0
        with self._cond:
            added = 0
            for e in events:
                if e.seq > self._last_seq:
                    self._recent.append(event_dict(e))
                    self._last_seq = int(e.seq)
                    added += 1
            if added:
                self._cond.notify_all()
            return added

    def _run(self) -> None:
        delay = self.poll_s
        while not self._closed:
            try:
                n = self.poll_once()
                delay = self.poll_s
                if n >= 1000:
                    continue  # more waiting: read on without sleeping
            except Exception:  # the database may be briefly unreachable (Neo4j restarts): back off, keep going
                self.poll_errors += 1
                log.exception("reading the event log failed")
                delay = min(max(delay * 2, self.poll_s), 5.0)
            with self._cond:
                if self._closed:
                    break
                self._cond.wait(delay)

    def events_after(self, seq: int) -> Optional[list[dict]]:
        """Buffered events with seq > ``seq``; None when the buffer no longer reaches back that far."""
        with self._cond:
            return self._after_locked(seq)

    def _after_locked(self, seq: int) -> Optional[list[dict]]:
        if seq >= self._last_seq:
            return []
        if not self._recent or self._recent[0]["seq"] > seq + 1:
            return None
        return [e for e in self._recent if e["seq"] > seq]

    def wait_after(self, seq: int, timeout: float) -> Optional[list[dict]]:
        """Block until events newer than ``seq`` arrive, the hub closes, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return []
                if self._last_seq > seq:
                    return self._after_locked(seq)
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

    def stream(self, last_id: Optional[int], replay_limit: int, keepalive_s: float, retry_ms: int) -> Iterator[str]:
        """The text of one SSE stream: replay after ``last_id``, then follow the log."""
        with self._cond:
            self.clients += 1
        try:
            yield f"retry: {int(retry_ms)}\n\n"
            if last_id is not None:
                try:  # the log may have moved since our last poll: catch up before judging the client's id
                    self.poll_once()
                except Exception:
                    log.exception("reading the event log failed")
            current = self.last_seq
            if last_id is None:
                seq = current
                yield sse_message({"last_seq": seq}, event_id=seq, event="hello")
            elif last_id > current:
                # the client knows events this log never had (the graph was rebuilt): start over
                seq = current
                yield sse_message({"last_seq": seq, "reason": "unknown event id"}, event_id=seq, event="reset")
            else:
                seq = last_id
                if current - seq > replay_limit:
                    seq = current
                    yield sse_message({"last_seq": seq, "reason": f"more than {replay_limit} events behind"},
                                      event_id=seq, event="reset")
                else:
                    missed = self.events_after(seq)
                    if missed is None:  # older than the buffer: read them from the log itself
                        missed = [event_dict(e) for e in self.store.events_since(seq, limit=replay_limit + 1)]
                    for ev in missed:
                        if ev["seq"] > current:
                            break
                        yield sse_message(ev, event_id=ev["seq"])
                        seq = ev["seq"]
                    seq = max(seq, current)
            last_sent = time.monotonic()
            while not self._closed:
                timeout = max(0.05, keepalive_s - (time.monotonic() - last_sent))
                batch = self.wait_after(seq, timeout)
                if self._closed:
                    break
                if batch is None:  # this client fell out of the buffer while it was slow to read
                    seq = self.last_seq
                    yield sse_message({"last_seq": seq, "reason": "fell behind"}, event_id=seq, event="reset")
                    last_sent = time.monotonic()
                    continue
                if batch:
                    out = []
                    for ev in batch:
                        out.append(sse_message(ev, event_id=ev["seq"]))
                        seq = ev["seq"]
                    yield "".join(out)
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= keepalive_s:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
        finally:
            with self._cond:
                self.clients -= 1
