"""Studio blueprint: the generation queue, timelines played as one film, reference images, and deleting.

* ``POST /api/runs`` queues a run (every unfinished scene, a timeline, the stale scenes, one scene) on the
  worker; ``GET /api/jobs`` is the queue and its history; ``POST /api/jobs/<id>/cancel`` cancels one.
* ``GET /api/timelines`` lists the story's timelines; ``POST /api/cut`` stitches one into
  ``media/cuts/<branch>-<fingerprint>.mp4`` (reused while its takes are unchanged) for the page's player.
* ``POST /api/references`` takes an image (base64 in JSON), keeps it in the story folder and attaches it to a
  character, a place or a scene; ``DELETE /api/references`` detaches one; ``GET /api/reference-image/...``
  shows the image a character, place or scene reference names (decoded and re-encoded as a PNG, whatever path
  the story file gave).

Deleting scenes and transitions, and "regenerate downstream", are the ``ripple`` blueprint's.

Writes go through the engine (409 without one), except a cut, which only reads the graph and writes a file
under ``media/``. Every body is checked here and refused with a 400 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from ..errors import Conflict, InvalidInput, NotFound
from .api import BadRequest, _body, _engine, _engine_call, _id, _number, _scene_or_404
from .viewer import current_viewer as _viewer

bp = Blueprint("studio", __name__, url_prefix="/api")

RUN_KINDS = ("all", "branch", "stale", "scene")
UPLOAD_LIMIT = 24 << 20  # bytes of JSON an upload may send (base64 of a 16 MiB image and change)
REFERENCE_TARGETS = ("character", "environment", "scene")


# -- the queue -----------------------------------------------------------------------------------


@bp.post("/runs")
def runs():
    v = _engine()
    d = _body({"kind", "target", "takes"}, "run")
    kind = d.get("kind", "all")
    if kind not in RUN_KINDS:
        raise BadRequest(f"kind: expected one of {', '.join(RUN_KINDS)}")
    target = d.get("target")
    if kind in ("branch", "scene"):
        target = _id(target, "target")
        if kind == "scene":
            _scene_or_404(target)
        else:
            _timeline_or_404(v.store, target)
    elif target not in (None, ""):
        raise BadRequest(f"target: a {kind} run takes none")
    else:
        target = None
    takes = d.get("takes")
    takes = None if takes is None else _number(takes, "takes", 1, v.config.max_takes, integer=True)
    job = v.worker.submit(takes=takes if kind != "scene" else (takes or 1), kind=kind, target=target)
    return jsonify({"ok": True, "job": job.as_dict()}), 202


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    v = _viewer()
    j = v.worker.job(job_id) if v.worker else None
    if j is None:
        raise NotFound(f"no job {job_id}")
    return jsonify(j)


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    v = _engine()
    _body()
    return jsonify({"ok": True, "job": v.worker.cancel(job_id).as_dict()})


# -- timelines -----------------------------------------------------------------------------------


@bp.get("/timelines")
def timelines():
    from ..engine.cut import branches

    scenes = _viewer().store.scenes()
    return jsonify({"main": scenes[0].placement.branch if scenes else None, "timelines": branches(scenes)})


@bp.post("/cut")
def cut():
    from ..engine.cut import plan_cut, write_cut

    v = _viewer()
    if v.media.root is None:
        raise Conflict("this viewer serves no media (no story folder): nothing to play")
    d = _body({"branch"}, "cut")
    branch = d.get("branch")
    branch = None if branch in (None, "") else _id(branch, "branch")
    if branch is not None:
        _timeline_or_404(v.store, branch)
    story_dir = Path(v.media.root).parent
    planned = plan_cut(v.store, branch, story_dir)
    folder = Path(v.media.root) / "cuts"
    path = folder / f"{_safe_name(planned.branch)}-{planned.fingerprint()}.mp4"
    if path.is_file():
        planned.path = str(path)
        made = planned
    else:
        made = write_cut(v.store, path, planned.branch, story_dir=story_dir)
        for old in folder.glob(f"{_safe_name(planned.branch)}-*.mp4"):
            if old != path:
                old.unlink(missing_ok=True)
    out = made.as_dict()
    out.pop("path", None)
    for s in out["scenes"]:
        s.pop("video_path", None)
    out["url"] = v.media.url(str(path), must_exist=True)
    return jsonify(out)


def _timeline_or_404(store, branch: str) -> None:
    if not any(s.placement.branch == branch for s in store.scenes()):
        raise NotFound(f"no timeline {branch!r}")


def _safe_name(branch: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", branch)[:100]


# -- references ----------------------------------------------------------------------------------


def _image_bytes(value) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest("image: expected the image as base64 text (or a data: URL)")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if not head.endswith(";base64"):
            raise BadRequest("image: a data: URL must be base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image: not valid base64") from None


@bp.post("/references")
def add_reference():
    request.max_content_length = UPLOAD_LIMIT
    v = _engine()
    d = _body({"image", "to", "id", "kind", "character", "strength"}, "reference")
    to, target = _reference_target(d)
    data = _image_bytes(d.get("image"))
    try:
        path = v.engine.add_reference_image(data)
    except InvalidInput as e:
        raise BadRequest(f"image: {e}") from e
    _attach(v, to, target, d, path)
    return jsonify({"ok": True, "to": to, "id": target, "name": os.path.basename(path),
                    "url": v.media.url(path, must_exist=True)}), 201


@bp.delete("/references")
def remove_reference():
    v = _engine()
    d = _body({"to", "id", "kind", "character"}, "reference")
    to, target = _reference_target(d)
    _attach(v, to, target, d, None)
    return jsonify({"ok": True, "to": to, "id": target})


def _reference_target(d: dict) -> tuple[str, str]:
    to = d.get("to")
    if to not in REFERENCE_TARGETS:
        raise BadRequest(f"to: expected one of {', '.join(REFERENCE_TARGETS)}")
    return to, _id(d.get("id"), "id")


def _attach(v, to: str, target: str, d: dict, path):
    eng = v.engine
    if to == "character":
        _engine_call("character.updated", target, eng.set_character_reference, target, path)
    elif to == "environment":
        _engine_call("environment.updated", target, eng.set_environment_reference, target, path)
    else:
        _scene_or_404(target)
        kind = d.get("kind")
        if kind not in ("character", "costume", "place"):
            raise BadRequest("kind: expected character, costume or place")
        character = d.get("character")
        character = None if character in (None, "") else _id(character, "character")
        strength = d.get("strength", 1.0)
        strength = 1.0 if strength is None else _number(strength, "strength", 0, 1)
        _engine_call("scene.updated", target, eng.set_scene_reference, target, kind, path, character=character,
                     strength=strength)


@bp.get("/reference-image/<kind>/<item_id>")
@bp.get("/reference-image/<kind>/<item_id>/<int:index>")
def reference_image(kind: str, item_id: str, index: int = 0):
    """The image a character's, a place's or a scene's (``index``-th) reference names, as a PNG of at most 512
    pixels a side. Only paths the graph holds are read, and only what decodes as an image is sent."""
    from ..engine.references import reference_root

    v = _viewer()
    path = None
    if kind == "character":
        path = next((c.reference_path for c in v.store.characters() if c.id == item_id), None)
    elif kind == "environment":
        path = next((e.reference_path for e in v.store.environments() if e.id == item_id), None)
    elif kind == "scene":
        refs = _scene_or_404(item_id).spec.references
        path = refs[index].path if 0 <= index < len(refs) else None
    if not path:
        raise NotFound(f"{kind} {item_id!r} has no reference image")
    p = Path(path)
    if not p.is_absolute():
        root = reference_root(v.store, v.media.story_dir or Path("."))
        p = Path(root) / p
    return _png(p)


def _png(path: Path) -> Response:
    from PIL import Image

    if not path.is_file():
        raise NotFound("the reference image is not there")
    try:
        with Image.open(path) as im:
            if max(im.size) > 16384:
                raise NotFound("the reference image is too large to show")
            im.thumbnail((512, 512))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise NotFound("the reference image cannot be read") from None
    resp = Response(buf.getvalue(), mimetype="image/png")
    resp.headers["Cache-Control"] = "no-store"
    return resp
