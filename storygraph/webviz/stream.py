"""Events blueprint: ``GET /events``, the Event log as Server-Sent Events (see :mod:`.events`)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..errors import InvalidInput, Unavailable
from .viewer import current_viewer

bp = Blueprint("events", __name__)


def _last_id():
    """The id to resume after: the ``Last-Event-ID`` header (a browser reconnecting by itself) first,
    then ``?lastEventId=`` (a page recreating its EventSource); None for a fresh client."""
    for raw in (request.headers.get("Last-Event-ID"), request.args.get("lastEventId")):
        if raw is None or raw.strip() == "":
            continue
        raw = raw.strip()
        if not raw.isdigit() or len(raw) > 18:
            raise InvalidInput(f"bad event id {raw!r}: expected a non-negative integer")
        return int(raw)
    return None


@bp.get("/events")
def events():
    v = current_viewer()
    last_id = _last_id()
    if v.hub.closed:
        raise Unavailable("the viewer is shutting down")
    cfg = v.config
    body = v.hub.stream(last_id, cfg.replay_limit, cfg.keepalive_s, cfg.retry_ms)
    resp = Response(body, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
