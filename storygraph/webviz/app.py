"""The viewer's Flask app factory: one story store, an optional engine, four blueprints.

``create_app(store)`` makes a follower (it reads the graph and follows the Event log; editing and
generating answer 409). ``create_app(store, engine)`` adds editing and generation, run by one
background worker. Blueprints: ``pages`` (the page and media files), ``api`` (JSON), ``studio`` (the queue,
timelines, references), ``ripple`` (deletions and "regenerate downstream") and ``stream`` (Server-Sent Events);
what they share is the :class:`~.viewer.Viewer`. Security checks run before every
request (see :mod:`.security`); every error becomes a JSON answer in one place, by its kind
(:mod:`storygraph.errors`); a body that breaks a story rule also says where, as a JSON ``pointer``. The factory builds and registers only: the viewer's threads start with
``viewer_of(app).start()``, which ``serve`` and ``start`` (:mod:`.server`) call.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from ..errors import StorygraphError
from ..rules import RuleError
from .api import bp as api_bp
from .graph import MediaLinks, finite
from .pages import bp as pages_bp
from .ripple import bp as ripple_bp
from .security import SAFE_METHODS, TOKEN_HEADER, cross_origin_reason, host_allowed, new_token, token_matches
from .stream import bp as events_bp
from .studio import bp as studio_bp
from .viewer import EXTENSION, Viewer, ViewerConfig, error, viewer_of

log = logging.getLogger(__name__)

__all__ = ["create_app", "ViewerConfig", "viewer_of"]


class _FiniteJSON(DefaultJSONProvider):
    """Flask's JSON, never with ``Infinity`` or ``NaN`` (which browsers cannot parse): such floats answer null."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs["allow_nan"] = False
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            return super().dumps(finite(obj), **kwargs)


def create_app(store, engine=None, *, story_dir=None, media_dir=None, token: Optional[str] = None,
               **options: Any) -> Flask:
    """The viewer for ``store``.

    ``engine``: the story engine (studio mode); None for a follower that only reads. ``story_dir``: the
    story folder whose ``media/`` is served (``media_dir`` names the media folder directly; neither: no
    media). ``token``: the secret state-changing requests must carry (default: a new random one, in
    ``app.config["STORYGRAPH_TOKEN"]``). ``options``: fields of :class:`ViewerConfig`.
    """
    known = {f.name for f in fields(ViewerConfig)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown viewer options: {', '.join(sorted(unknown))}")
    config = ViewerConfig(**options)
    media = MediaLinks(story_dir, media_dir)

    pkg = Path(__file__).parent
    app = Flask(__name__, template_folder=str(pkg / "templates"), static_folder=str(pkg / "static"),
                static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.json = _FiniteJSON(app)
    app.json.sort_keys = False
    app.config["STORYGRAPH_TOKEN"] = token or new_token()
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 0
    app.extensions[EXTENSION] = Viewer(store, engine, app.config["STORYGRAPH_TOKEN"], media, config)

    app.register_blueprint(pages_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(ripple_bp)
    app.register_blueprint(events_bp)
    app.register_blueprint(studio_bp)

    @app.before_request
    def guard():
        v = viewer_of(app)
        if not host_allowed(request.host, v.config.allowed_hosts):
            return error(403, f"host {request.host!r} is not served here")
        if request.method in SAFE_METHODS or request.routing_exception is not None:
            return None  # reads need no token; a 404 / 405 is answered as it is (no view runs)
        if not token_matches(v.token, request.headers.get(TOKEN_HEADER)):
            return error(401, f"missing or wrong {TOKEN_HEADER} header: use the token printed when the viewer started")
        reason = cross_origin_reason(request.headers, request.scheme, request.host)
        if reason:
            return error(403, reason)
        if request.mimetype != "application/json":
            return error(415, "send JSON (Content-Type: application/json)")
        return None

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'")
        return resp

    @app.errorhandler(StorygraphError)
    def storygraph_error(e: StorygraphError):
        if isinstance(e, RuleError):  # a request body that breaks a story rule: where, as a JSON pointer
            return error(e.http_status, e.pointed(), pointer=e.pointer)
        return error(e.http_status, str(e))

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        log.exception("request failed: %s %s", request.method, request.path)
        return error(500, f"internal error: {type(e).__name__}: {e}")

    return app
