"""JSON routes for edits that ripple: deleting scenes and transitions, and making the stale scenes after a scene
again ("regenerate downstream") through the viewer's one generation worker.

Kept apart from the ``api`` blueprint it builds on (its request checks and its way of telling followers), so each
can change without the other. Every write goes through the engine, which marks what an edit makes stale.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import Conflict
from .api import BadRequest, _body, _engine, _engine_call, _id, _scene_or_404

bp = Blueprint("ripple", __name__, url_prefix="/api")


@bp.delete("/scenes/<scene_id>")
def delete_scene(scene_id: str):
    """Delete a scene (body ``{"cascade": true}`` to delete the generated scenes after it too)."""
    v = _engine()
    _scene_or_404(scene_id)
    d = _body({"cascade"})
    cascade = d.get("cascade", False)
    if not isinstance(cascade, bool):
        raise BadRequest("cascade: expected true or false")
    gone = _engine_call("scene.deleted", scene_id, v.engine.delete_scene, scene_id, cascade=cascade)
    return jsonify({"ok": True, "deleted": gone})


@bp.delete("/transitions/<from_id>/<to_id>")
def delete_transition(from_id: str, to_id: str):
    """Delete the transition ``from -> to``: ``to`` starts a timeline of its own, and it and what follows are stale."""
    v = _engine()
    _id(from_id, "from")
    _id(to_id, "to")
    _body()
    marks = _engine_call("transition.deleted", to_id, v.engine.delete_transition, from_id, to_id)
    return jsonify({"ok": True, "stale": sorted(marks)})


@bp.post("/scenes/<scene_id>/regenerate-downstream")
def regenerate_downstream(scene_id: str):
    """Queue the stale scenes from this one on (itself included), parents first, on the generation worker."""
    v = _engine()
    _scene_or_404(scene_id)
    _body()
    jobs, skipped = [], []
    for sid in v.engine.stale_scenes(after=scene_id):
        try:
            jobs.append(v.worker.submit(sid, 1).as_dict())
        except Conflict:  # already queued or running
            skipped.append(sid)
    return jsonify({"ok": True, "jobs": jobs, "already_queued": skipped}), 202 if jobs else 200
