"""Pages blueprint: the viewer page and the story's media files (only from its ``media/`` folder)."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, send_file

from ..errors import NotFound
from .security import safe_media_path, token_matches
from .viewer import current_viewer as _viewer

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    v = _viewer()
    given = request.args.get("token")
    # the token goes into the page only for a request that already holds it (the URL printed at start)
    token = given if token_matches(v.token, given) else ""
    meta = {}
    try:
        meta = v.store.story_meta() or {}
    except Exception:
        pass
    resp = current_app.make_response(render_template(
        "index.html", token=token, token_rejected=bool(given) and not token, editable=v.editable,
        title=meta.get("title") or meta.get("id") or "story", backend=v.store.backend))
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/media/<path:subpath>", merge_slashes=False)
def media(subpath: str):
    v = _viewer()
    if v.media.root is None:
        raise NotFound("this viewer serves no media (no story folder)")
    path = safe_media_path(v.media.root, subpath)
    resp = send_file(path, conditional=True, max_age=60)
    resp.headers["Cache-Control"] = "private, max-age=60"
    return resp
