"""JSON API blueprint: the graph, scene and character panels, the read-only Cypher console, and (with
an engine) editing, generating and choosing takes.

Reads use the store's record methods; the console uses ``store.query(..., read_only=True, timeout_s=...)``
and nothing else; every write goes through the engine. Edit bodies are read against the story rules
(:mod:`storygraph.rules`, the same as story files and the Python API), and the engine checks the edit against
the story before writing. Errors are JSON ``{"error", "status"}``; one that breaks a story rule adds the
``pointer`` (RFC 6901) of the offending value in the body and answers 400.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Optional

from flask import Blueprint, Response, jsonify, request

from ..domain import Character, Environment, SceneSpec, Transition
from ..errors import Conflict, InvalidInput, NotFound
from ..graphdb.store import QueryError, ReadOnlyViolation
from ..rules import CHARACTER, ENVIRONMENT, ID_EXPECTED, ID_PATTERN, NEW_SCENE, SCENE_EDIT, TRANSITION, read_json
from .graph import jsonable, result_graph, scene_element
from .viewer import current_viewer as _viewer

bp = Blueprint("api", __name__, url_prefix="/api")

# Reference images are not part of these bodies: they are uploaded and attached through their own routes.
CHARACTER_BODY = CHARACTER.without("reference")
ENVIRONMENT_BODY = ENVIRONMENT.without("reference")
NEW_SCENE_BODY = NEW_SCENE.without("references")
SCENE_EDIT_BODY = SCENE_EDIT.without("references")


class BadRequest(InvalidInput):
    """A request body the API cannot take. ``status`` is kept for callers that name one; the kinds of
    :mod:`storygraph.errors` (``NotFound``, ``Conflict``, ...) say it otherwise."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        if status is not None:
            self.http_status = status


def _body(allowed: Optional[set] = None, what: str = "") -> dict:
    """The request's JSON object; with ``allowed``, any other field is refused (naming the body as ``what``)."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the JSON decoder goes
        raise BadRequest("expected a JSON object (nested too deeply)") from None
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    unknown = sorted(set(data) - allowed) if allowed is not None else []
    if unknown:
        raise BadRequest(f"unknown {what + ' ' if what else ''}fields: {', '.join(unknown)}")
    return data


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"{what}: expected {ID_EXPECTED}")
    return value


def _number(value: Any, what: str, lo: float, hi: float, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{what}: expected a number from {lo:g} to {hi:g}")
    if integer and int(value) != value:
        raise BadRequest(f"{what}: expected an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{what}: {value} is out of range {lo:g}..{hi:g}")
    return int(value) if integer else float(value)


def _spec(fields: dict) -> SceneSpec:
    """A scene spec from a checked body (null text is empty, null characters none)."""
    out = {k: v for k, v in fields.items() if v is not None}
    out["characters"] = tuple(out.get("characters", ()))
    return SceneSpec(**out)


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
                           "strength": r["strength"], "name": r["path"].rsplit("/", 1)[-1],
                           "image_url": f"/api/reference-image/scene/{scene_id}/{i}"}
                          for i, r in enumerate(spec["references"])]
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
        "next_prompt": _next_prompt(v, ctx), "children": store.scene_children(scene_id),
        "editable": v.editable,
    })


def _next_prompt(v, ctx) -> Optional[str]:
    """The prompt the scene's next generation will use (its spec as it is now; the shown ``prompt`` is the
    chosen take's)."""
    from ..engine.prompts import DEFAULT_TEMPLATE, build_prompt

    template = v.engine.config.engine.prompt_template if v.engine is not None else DEFAULT_TEMPLATE
    try:
        return build_prompt(ctx.scene.spec, ctx.characters, ctx.environment, template)
    except ValueError:
        return None


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
        "reference_url": f"/api/reference-image/character/{c.id}" if c.reference_path else None,
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
    rows = [[jsonable(c) for c in r] for r in result.rows]
    return jsonify({
        "columns": list(result.columns), "rows": rows, "graph": result_graph(result.rows),
        "row_count": len(result.rows), "truncated": result.truncated, "elapsed_ms": round(elapsed * 1000, 2),
        "time_limit_s": v.config.query_timeout_s, "max_rows": v.config.max_query_rows,
    })


# -- edits (engine) ------------------------------------------------------------------------------


@bp.post("/characters")
def add_character():
    _engine()
    d = read_json(_body(), CHARACTER_BODY)
    cid = d["id"]
    ch = Character(id=cid, name=d["name"], description=d["description"], decay_tau=d.get("decay_tau"))
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
    d = read_json(_body(), ENVIRONMENT_BODY)
    eid = d["id"]
    env = Environment(id=eid, description=d["description"], name=d.get("name") or "")
    env = _keep_reference(env, _viewer().store.environments())
    _engine_call("environment.saved", eid, _viewer().engine.add_environment, env)
    return jsonify({"ok": True, "id": eid}), 201


@bp.post("/scenes")
def add_scene():
    v = _engine()
    d = read_json(_body(), NEW_SCENE_BODY)
    sid, parent, kind, gap = d.pop("id"), d.pop("parent_id", None), d.pop("kind", None) or "cut", d.pop("gap", None)
    if v.store.scene(sid) is not None:
        raise Conflict(f"scene {sid!r} exists already: edit it instead")
    spec = _spec({"id": sid, **d})
    _engine_call("scene.added", sid, v.engine.add_scene, spec, parent_id=parent, kind=kind, gap=gap)
    return jsonify({"ok": True, "id": sid}), 201


@bp.patch("/scenes/<scene_id>")
def update_scene(scene_id: str):
    v = _engine()
    _scene_or_404(scene_id)
    fields = read_json(_body(), SCENE_EDIT_BODY)
    if not fields:
        raise BadRequest("nothing to change")
    _engine_call("scene.updated", scene_id, v.engine.update_scene, scene_id, **fields)
    return jsonify({"ok": True, "id": scene_id})


@bp.post("/transitions")
def add_transition():
    v = _engine()
    d = read_json(_body(), TRANSITION)
    src, dst = d["from"], d["to"]
    _engine_call("transition.added", dst, v.engine.add_transition, Transition(src, dst, d["kind"], d.get("gap")))
    return jsonify({"ok": True}), 201


@bp.post("/scenes/<scene_id>/generate")
def generate(scene_id: str):
    v = _engine()
    _scene_or_404(scene_id)
    d = _body()
    takes = d.get("takes", 1)
    takes = _number(takes, "takes", 1, v.config.max_takes, integer=True)
    job = v.worker.submit(scene_id, takes, kind="scene")
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

