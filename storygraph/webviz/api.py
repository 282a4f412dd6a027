"""JSON API blueprint: the graph, scene and character panels, the read-only Cypher console, and (with
an engine) editing, generating and choosing takes.

Reads use the store's record methods; the console uses ``store.query(..., read_only=True, timeout_s=...)``
and nothing else; every write goes through the engine. Errors are JSON ``{"error", "status"}``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Optional

from flask import Blueprint, Response, jsonify, request

from ..domain import MEMORY_MODES, TRANSITION_KINDS, Character, Environment, SceneSpec, Transition, generation_settings
from ..errors import Conflict, InvalidInput, NotFound
from ..graphdb.store import QueryError, ReadOnlyViolation
from .graph import jsonable, scene_element
from .viewer import current_viewer as _viewer

bp = Blueprint("api", __name__, url_prefix="/api")

TEXT_FIELDS = ("title", "action", "lighting", "weather", "camera")
#: the generation settings, as declared in storygraph.domain.GenerationDefaults: name -> (type, Setting)
SETTINGS = {name: (kind, s) for name, kind, s in generation_settings()}
SPEC_FIELDS = TEXT_FIELDS + tuple(SETTINGS) + ("characters", "environment", "memory")


class BadRequest(InvalidInput):
    """A request body the API cannot take. ``status`` is kept for callers that name one; the kinds of
    :mod:`storygraph.errors` (``NotFound``, ``Conflict``, ...) say it otherwise."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        if status is not None:
            self.http_status = status


def _body() -> dict:
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the JSON decoder goes
        raise BadRequest("expected a JSON object (nested too deeply)") from None
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    return data


def _id(value: Any, what: str) -> str:
    from ..storyfile import ID_PATTERN

    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"{what}: expected an id (a letter or digit, then up to 127 letters, digits, '_', '.' or '-')")
    return value


def _text(value: Any, what: str, required: bool = False, limit: int = 10_000) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{what}: expected {'a non-empty' if required else 'a'} string")
    if len(value) > limit:
        raise BadRequest(f"{what}: longer than {limit} characters")
    return value


def _number(value: Any, what: str, lo: float, hi: float, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{what}: expected a number from {lo:g} to {hi:g}")
    if integer and int(value) != value:
        raise BadRequest(f"{what}: expected an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{what}: {value} is out of range {lo:g}..{hi:g}")
    return int(value) if integer else float(value)


def _spec_fields(data: dict) -> dict:
    """Scene spec fields present in ``data``, checked and converted; unknown keys are refused."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in TEXT_FIELDS:
            out[key] = _text(value, key, required=(key == "action"))
        elif key in SETTINGS:
            out[key] = None if value is None else _setting(key, value)
        elif key == "characters":
            if not isinstance(value, list):
                raise BadRequest("characters: expected a list of character ids")
            ids = [_id(c, "characters[]") for c in value]
            if len(set(ids)) != len(ids):
                raise BadRequest("characters: each character once")
            out[key] = tuple(ids)
        elif key == "environment":
            out[key] = None if value in (None, "") else _id(value, "environment")
        elif key == "memory":
            if value not in (None, "") and value not in MEMORY_MODES:
                raise BadRequest(f"memory: expected one of {', '.join(MEMORY_MODES)} (or null: the config's mode for "
                                 "the transition)")
            out[key] = value or None
        else:
            raise BadRequest(f"unknown scene field {key!r}; editable fields: {', '.join(SPEC_FIELDS)}")
    return out


def _setting(key: str, value: Any):
    """One generation setting, checked against its declaration (``None``, the story's default, is handled above)."""
    kind, s = SETTINGS[key]
    if kind is str:
        return _text(value, key)
    v = _number(value, key, s.lo, s.hi, integer=kind is int)
    if not s.allows(v):
        raise BadRequest(f"{key}: expected {s.expected}")
    return v


def _engine():
    v = _viewer()
    if v.engine is None:
        raise Conflict("this viewer follows the story read-only (no engine here): editing and generating are off; "
                       "use `storygraph studio` on the story folder")
    return v


def _engine_call(event_kind: str, ref_id: str, fn, /, *args, **kwargs):
    """Run one engine edit and make sure followers hear of it (its errors answer by their kind)."""
    v = _engine()
    before = v.store.last_event_seq()
    try:
        result = fn(*args, **kwargs)
    finally:
        v.changed()
    if v.store.last_event_seq() == before:
        # the engine wrote no Event for this edit: write one, so viewers following the log see it
        v.store.append_event(event_kind, ref_id, {})
        v.changed()
    return result


# -- reads ---------------------------------------------------------------------------------------


@bp.get("/info")
def info():
    v = _viewer()
    meta = v.store.story_meta() or {}
    return jsonify({
        "story": {"id": meta.get("id"), "title": meta.get("title")}, "backend": v.store.backend,
        "editable": v.editable, "last_seq": v.hub.last_seq, "stream_clients": v.hub.clients,
        "query_timeout_s": v.config.query_timeout_s, "max_takes": v.config.max_takes,
        "jobs": v.worker.jobs() if v.worker else [],
    })


@bp.get("/graph")
def graph():
    _, body = _viewer().graph()
    resp = Response(body, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _scene_or_404(scene_id: str):
    rec = _viewer().store.scene(scene_id)
    if rec is None:
        raise NotFound(f"no scene {scene_id!r}")
    return rec


def _scores(s) -> dict:
    return {k: v for k, v in s.as_dict().items()}


@bp.get("/scenes/<scene_id>")
def scene(scene_id: str):
    v = _viewer()
    rec = _scene_or_404(scene_id)
    store, media = v.store, v.media
    ctx = store.scene_context(scene_id)
    spec = asdict(rec.spec)
    spec["references"] = [{"kind": r["kind"], "character": r["character"], "frame_index": r["frame_index"],
                           "strength": r["strength"], "name": r["path"].rsplit("/", 1)[-1]}
                          for r in spec["references"]]
    takes = [{
        "take": t.take, "seed": t.seed, "prompt": t.prompt, "chosen": t.chosen, "scores": _scores(t.scores),
        "identity_by_character": t.scores.identity_by_character,
        "video_url": media.url(t.video_path, must_exist=True), "thumb_url": media.url(t.last_frame_path),
    } for t in store.takes(scene_id)]
    conds = store.conditioned_on(scene_id)
    app_ids = [c.target_id for c in conds if c.target_kind == "Appearance"]
    apps = {a.id: a for a in store.appearances(ids=app_ids, accepted_only=False, with_vectors=False)} if app_ids else {}
    scene_targets = {c.target_id: store.scene(c.target_id) for c in conds if c.target_kind == "Scene"}
    conditioning = []
    for c in conds:
        item = {"role": c.role, "mode": c.mode, "target_kind": c.target_kind, "target_id": c.target_id,
                "frame_index": c.frame_index, "strength": c.strength, "score": c.score, "reason": c.reason,
                "scene_id": None, "character_id": None, "thumb_url": None}
        if c.target_kind == "Appearance" and c.target_id in apps:
            a = apps[c.target_id]
            item.update(scene_id=a.scene_id, character_id=a.character_id, thumb_url=media.url(a.frame_path),
                        identity_score=a.identity_score, clock=a.clock)
        elif c.target_kind == "Scene":
            t = scene_targets.get(c.target_id)
            item.update(scene_id=c.target_id, thumb_url=media.url(t.last_frame_path) if t else None)
        conditioning.append(item)
    return jsonify({
        "id": rec.id, "spec": spec, "status": rec.status, "clock": rec.clock, "branch": rec.placement.branch,
        "pos": rec.placement.pos, "parent_id": rec.placement.parent_id,
        "transition_in": None if ctx.transition is None else {
            "from": ctx.transition.from_id, "kind": ctx.transition.kind, "gap": ctx.transition.gap,
            "decay": ctx.transition.decay},
        "environment": None if ctx.environment is None else {
            "id": ctx.environment.id, "name": ctx.environment.name, "description": ctx.environment.description},
        "stale_reason": rec.stale_reason or None, "stale_from": rec.stale_from or None,
        "prompt": rec.prompt, "seed": rec.seed, "scores": _scores(rec.scores), "chosen_take": rec.chosen_take,
        "takes_count": rec.takes, "notes": rec.notes, "video_url": media.url(rec.video_path, must_exist=True),
        "thumb_url": media.url(rec.last_frame_path), "takes": takes, "conditioning": conditioning,
        "editable": v.editable,
    })


@bp.get("/scenes/<scene_id>/element")
def scene_el(scene_id: str):
    v = _viewer()
    el = scene_element(v.store, v.media, scene_id)
    if el is None:
        raise NotFound(f"no scene {scene_id!r}")
    return jsonify(el)


@bp.get("/characters/<character_id>")
def character(character_id: str):
    v = _viewer()
    found = [c for c in v.store.characters() if c.id == character_id]
    if not found:
        raise NotFound(f"no character {character_id!r}")
    c = found[0]
    apps = v.store.appearances(character_id=character_id, with_vectors=False)
    graph = v.graph_data()
    scenes = [{"id": n["data"]["id"], "label": n["data"]["label"], "clock": n["data"]["clock"],
               "branch": n["data"]["branch"], "status": n["data"]["status"], "thumb": n["data"]["thumb"]}
              for n in graph["nodes"] if n["data"]["type"] == "scene" and character_id in n["data"]["characters"]]
    return jsonify({
        "id": c.id, "name": c.name, "description": c.description, "decay_tau": c.decay_tau,
        "reference": c.reference_path.rsplit("/", 1)[-1] if c.reference_path else None,
        "appearances": [{
            "id": a.id, "scene_id": a.scene_id, "take": a.take, "frame_index": a.frame_index, "clock": a.clock,
            "branch": a.branch, "strength": a.strength, "reinforced_clock": a.reinforced_clock,
            "identity_score": a.identity_score, "thumb_url": v.media.url(a.frame_path)}
            for a in sorted(apps, key=lambda a: (a.clock, a.scene_id, a.frame_index))],
        "scenes": sorted(scenes, key=lambda s: (s["clock"], s["id"])),
        "editable": v.editable,
    })


@bp.get("/jobs")
def jobs():
    v = _viewer()
    return jsonify({"jobs": v.worker.jobs() if v.worker else [], "editable": v.editable})


# -- the Cypher console --------------------------------------------------------------------------


@bp.post("/query")
def query():
    from ..graphdb.readonly import MAX_QUERY_CHARS

    v = _viewer()
    data = _body()
    cypher = data.get("cypher")
    if not isinstance(cypher, str) or not cypher.strip():
        raise BadRequest("cypher: expected a query")
    if len(cypher) > MAX_QUERY_CHARS:
        raise BadRequest(f"cypher: longer than {MAX_QUERY_CHARS} characters")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest("params: expected a JSON object")
    t0 = time.perf_counter()
    try:
        # its own process and time limit: the store's lock is held only while the query's process opens the file
        result = v.store.query(cypher, params, read_only=True, timeout_s=v.config.query_timeout_s,
                               max_rows=v.config.max_query_rows)
    except ReadOnlyViolation as e:
        raise BadRequest(str(e), 403) from e
    except QueryError as e:
        raise BadRequest(str(e), 400) from e
    elapsed = time.perf_counter() - t0
    return jsonify({
        "columns": list(result.columns), "rows": [[jsonable(c) for c in r] for r in result.rows],
        "row_count": len(result.rows), "truncated": result.truncated, "elapsed_ms": round(elapsed * 1000, 2),
        "time_limit_s": v.config.query_timeout_s, "max_rows": v.config.max_query_rows,
    })


# -- edits (engine) ------------------------------------------------------------------------------


@bp.post("/characters")
def add_character():
    _engine()
    d = _body()
    unknown = set(d) - {"id", "name", "description", "decay_tau"}
    if unknown:
        raise BadRequest(f"unknown character fields: {', '.join(sorted(unknown))}")
    cid = _id(d.get("id"), "id")
    tau = d.get("decay_tau")
    ch = Character(id=cid, name=_text(d.get("name"), "name", required=True, limit=200),
                   description=_text(d.get("description"), "description", required=True),
                   decay_tau=None if tau in (None, "") else _number(tau, "decay_tau", 1e-6, 1e9))
    ch = _keep_reference(ch, _viewer().store.characters())
    _engine_call("character.saved", cid, _viewer().engine.add_character, ch)
    return jsonify({"ok": True, "id": cid}), 201


def _keep_reference(new, existing):
    """The form has no reference image field: an edit keeps the one the story file gave."""
    old = next((x for x in existing if x.id == new.id), None)
    if old is not None and old.reference_path:
        from dataclasses import replace

        return replace(new, reference_path=old.reference_path)
    return new


@bp.post("/environments")
def add_environment():
    _engine()
    d = _body()
    unknown = set(d) - {"id", "name", "description"}
    if unknown:
        raise BadRequest(f"unknown environment fields: {', '.join(sorted(unknown))}")
    eid = _id(d.get("id"), "id")
    env = Environment(id=eid, description=_text(d.get("description"), "description", required=True),
                      name=_text(d.get("name"), "name", limit=200))
    env = _keep_reference(env, _viewer().store.environments())
    _engine_call("environment.saved", eid, _viewer().engine.add_environment, env)
    return jsonify({"ok": True, "id": eid}), 201


@bp.post("/scenes")
def add_scene():
    v = _engine()
    d = dict(_body())
    sid = _id(d.pop("id", None), "id")
    parent = d.pop("parent_id", None)
    parent = None if parent in (None, "") else _id(parent, "parent_id")
    kind = d.pop("kind", "cut") or "cut"
    if kind not in TRANSITION_KINDS:
        raise BadRequest(f"kind: expected one of {', '.join(TRANSITION_KINDS)}")
    gap = d.pop("gap", None)
    gap = None if gap in (None, "") else _number(gap, "gap", 0, 1e9)
    fields = _spec_fields(d)
    if "action" not in fields:
        raise BadRequest("action: a scene needs an action")
    if v.store.scene(sid) is not None:
        raise Conflict(f"scene {sid!r} exists already: edit it instead")
    if parent is not None and v.store.scene(parent) is None:
        raise NotFound(f"no scene {parent!r} to continue from")
    spec = SceneSpec(id=sid, **fields)
    _engine_call("scene.added", sid, v.engine.add_scene, spec, parent_id=parent, kind=kind, gap=gap)
    return jsonify({"ok": True, "id": sid}), 201


@bp.patch("/scenes/<scene_id>")
def update_scene(scene_id: str):
    v = _engine()
    _scene_or_404(scene_id)
    fields = _spec_fields(_body())
    if not fields:
        raise BadRequest("nothing to change")
    _engine_call("scene.updated", scene_id, v.engine.update_scene, scene_id, **fields)
    return jsonify({"ok": True, "id": scene_id})


@bp.post("/transitions")
def add_transition():
    v = _engine()
    d = _body()
    unknown = set(d) - {"from", "to", "kind", "gap"}
    if unknown:
        raise BadRequest(f"unknown transition fields: {', '.join(sorted(unknown))}")
    src, dst = _id(d.get("from"), "from"), _id(d.get("to"), "to")
    kind = d.get("kind") or "cut"
    if kind not in TRANSITION_KINDS:
        raise BadRequest(f"kind: expected one of {', '.join(TRANSITION_KINDS)}")
    gap = d.get("gap")
    gap = None if gap in (None, "") else _number(gap, "gap", 0, 1e9)
    for s in (src, dst):
        _scene_or_404(s)
    _engine_call("transition.added", dst, v.engine.add_transition, Transition(src, dst, kind, gap))
    return jsonify({"ok": True}), 201


@bp.post("/scenes/<scene_id>/generate")
def generate(scene_id: str):
    v = _engine()
    _scene_or_404(scene_id)
    d = _body()
    takes = d.get("takes", 1)
    takes = _number(takes, "takes", 1, v.config.max_takes, integer=True)
    job = v.worker.submit(scene_id, takes)
    return jsonify({"ok": True, "job": job.as_dict()}), 202


@bp.post("/scenes/<scene_id>/choose")
def choose(scene_id: str):
    v = _engine()
    _scene_or_404(scene_id)
    take = _number(_body().get("take"), "take", 0, 1e6, integer=True)
    if take not in {t.take for t in v.store.takes(scene_id)}:
        raise NotFound(f"scene {scene_id!r} has no take {take}")
    _engine_call("take.chosen", scene_id, v.engine.choose_take, scene_id, take)
    return jsonify({"ok": True, "id": scene_id, "take": take})

