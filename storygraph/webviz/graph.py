"""The story as Cytoscape.js elements, built from the store's record methods (no Cypher here).

Scenes lie on a left-to-right timeline: ``x`` grows with the story clock (a long gap is drawn no wider than
``MAX_DX``: its edge says how long it is), and each branch gets a lane (a row), reusing free lanes next to its
parent's. The page draws these positions (a small story may also be laid out by dagre in the browser) and labels
each branch's lane. Characters sit in a row under the timeline and environments in a row above it, each near the
middle of the scenes it belongs to.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from ..mediapaths import resolve

# model units (pixels at zoom 1)
CLOCK_X = 36.0  # per unit of story time
MIN_DX = 110.0  # between a scene and its parent
MAX_DX = 300.0  # at most, however long the gap (a time skip says its gap on its edge)
LANE_Y = 100.0
ROW_GAP = 170.0  # between the timeline and the character / environment rows
SATELLITE_DX = 120.0


class MediaLinks:
    """Turns paths the store holds into ``/media/...`` URLs, only for files inside the media folder."""

    def __init__(self, story_dir: Optional[os.PathLike], media_dir: Optional[os.PathLike] = None):
        self.story_dir = Path(os.path.abspath(story_dir)) if story_dir else None
        if media_dir is not None:
            root = Path(os.path.abspath(media_dir))
        elif self.story_dir is not None:
            root = self.story_dir / "media"
        else:
            root = None
        self.root = root
        # the folder as named and as resolved (paths in the graph may be written either way)
        self._roots = [] if root is None else list(dict.fromkeys([str(root), os.path.realpath(root)]))

    def url(self, path: Optional[str], must_exist: bool = False) -> Optional[str]:
        """The URL of ``path``, or None outside the media folder (or, with ``must_exist``, for a missing file)."""
        if not path or self.root is None:
            return None
        p = Path(path)
        if p.is_absolute():  # an older story's path: re-rooted in this folder when it is not there
            candidates = list(dict.fromkeys([p, resolve(self.story_dir, path)]))
        else:
            candidates = [c for c in (self.story_dir / p if self.story_dir else None, self.root / p) if c is not None]
        for c in candidates:
            full = os.path.normpath(c)
            if must_exist and not os.path.isfile(full):
                continue
            for root in self._roots:
                rel = os.path.relpath(full, root)
                if rel == "." or rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
                    continue
                return "/media/" + quote(rel.replace(os.sep, "/"))
        return None


def scene_label(rec) -> str:
    return rec.spec.title or rec.id


def scene_node(rec, media: MediaLinks) -> dict:
    """One scene as a Cytoscape node (no position): what the graph draws and filters on, nothing more
    (the scene panel asks for the rest)."""
    spec = rec.spec
    data = {
        "id": rec.id, "type": "scene", "label": scene_label(rec), "status": rec.status, "clock": rec.clock,
        "branch": rec.placement.branch, "characters": list(spec.characters), "environment": spec.environment,
        "thumb": media.url(rec.last_frame_path),
    }
    if rec.stale_reason:
        data.update(stale_reason=rec.stale_reason, stale_from=rec.stale_from)
    return {"data": data, "classes": f"scene status-{rec.status}"}


def next_edge(t) -> dict:
    return {"data": {"id": f"next:{t.from_id}>{t.to_id}", "source": t.from_id, "target": t.to_id, "type": "next",
                     "kind": t.kind, "gap": t.gap, "decay": round(t.decay, 4), "skip": f"+{t.gap:g}"},
            "classes": f"next {t.kind}"}


def appears_edges(scenes, appearances, strength_init: float) -> list[dict]:
    """APPEARS_IN as the graph holds it: the planned cast of every scene, with the strength and identity
    of the accepted appearance where the scene was generated (the strongest one per character)."""
    observed: dict[tuple[str, str], tuple[float, float]] = {}
    for a in appearances:
        key = (a.character_id, a.scene_id)
        prev = observed.get(key)
        if prev is None or a.strength > prev[0]:
            observed[key] = (float(a.strength), float(a.identity_score))
    out = []
    seen = set()
    for rec in scenes:
        for cid in rec.spec.characters:
            key = (cid, rec.id)
            seen.add(key)
            out.append(_appears(cid, rec.id, observed.get(key), strength_init))
    known = {rec.id for rec in scenes}
    for key, obs in observed.items():
        if key not in seen and key[1] in known:
            out.append(_appears(key[0], key[1], obs, strength_init))
    return out


def _appears(cid: str, sid: str, obs, strength_init: float) -> dict:
    strength, identity = obs if obs is not None else (strength_init, None)
    return {"data": {"id": f"appears:{cid}>{sid}", "source": cid, "target": sid, "type": "appears",
                     "strength": strength, "identity": identity, "observed": obs is not None},
            "classes": "appears observed" if obs is not None else "appears planned"}


def timeline_positions(scenes) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """(scene id -> (x, y), branch -> lane) for scenes given parents first."""
    x: dict[str, float] = {}
    clock_of: dict[str, float] = {}
    branch_of: dict[str, str] = {}
    span: dict[str, list] = {}  # branch -> [first x, last x, parent branch]
    order: list[str] = []
    for rec in scenes:
        p = rec.placement
        px = x.get(p.parent_id) if p.parent_id else None
        xi = rec.clock * CLOCK_X
        if px is not None:
            gap = rec.clock - clock_of.get(p.parent_id, rec.clock)
            xi = px + min(max(gap * CLOCK_X, MIN_DX), MAX_DX)
        clock_of[rec.id] = rec.clock
        x[rec.id] = xi
        branch_of[rec.id] = p.branch
        if p.branch not in span:
            span[p.branch] = [xi, xi, branch_of.get(p.parent_id) if p.parent_id else None]
            order.append(p.branch)
        else:
            s = span[p.branch]
            s[0], s[1] = min(s[0], xi), max(s[1], xi)
    # lanes: each branch takes the free lane nearest its parent's (greedy, in order of start)
    lane_end: list[float] = []
    lane: dict[str, int] = {}
    pad = MIN_DX * 0.9
    for b in sorted(order, key=lambda b: (span[b][2] is not None, span[b][0])):
        first, last, parent_branch = span[b]
        want = lane.get(parent_branch, 0) if parent_branch is not None else 0
        free = [i for i, end in enumerate(lane_end) if end + pad <= first]
        if free:
            chosen = min(free, key=lambda i: (abs(i - want), i <= want, i))
        else:
            chosen = len(lane_end)
            lane_end.append(-math.inf)
        lane_end[chosen] = last
        lane[b] = chosen
    return {sid: (x[sid], lane[branch_of[sid]] * LANE_Y) for sid in x}, lane


def branch_lanes(scenes, pos: dict, lanes: dict) -> list[dict]:
    """Each branch's lane: ``{branch, lane, x0, x1, y, first, parent, scenes}`` (x0/x1: its first and last scene),
    so the page can label the lanes of the timeline."""
    out: dict = {}
    for rec in scenes:
        p = rec.placement
        x, y = pos[rec.id]
        b = out.get(p.branch)
        if b is None:
            out[p.branch] = {"branch": p.branch, "lane": lanes[p.branch], "x0": round(x, 1), "x1": round(x, 1),
                             "y": round(y, 1), "first": rec.id, "parent": p.parent_id, "scenes": 1}
        else:
            b["x0"], b["x1"] = min(b["x0"], round(x, 1)), max(b["x1"], round(x, 1))
            b["scenes"] += 1
    return list(out.values())


def satellite_positions(ids_to_xs: dict[str, list[float]], y: float, default_x: float) -> dict[str, tuple[float, float]]:
    """A row at ``y``: each id near the mean x of its scenes, at least SATELLITE_DX apart."""
    wanted = sorted(((sum(xs) / len(xs)) if xs else default_x, i) for i, xs in ids_to_xs.items())
    out = {}
    prev = -math.inf
    for want, i in wanted:
        xi = max(want, prev + SATELLITE_DX)
        out[i] = (xi, y)
        prev = xi
    return out


def build_graph(store, media: MediaLinks, *, big_scenes: int = 1500, dagre_max_scenes: int = 400,
                editable: bool = False, last_seq: int = 0) -> dict:
    """Everything the page draws, as one JSON-able dict."""
    scenes = store.scenes()
    characters = store.characters()
    environments = store.environments()
    transitions = store.transitions()
    big = len(scenes) > big_scenes
    pos, lanes = timeline_positions(scenes)

    nodes = []
    for rec in scenes:
        n = scene_node(rec, media)
        px, py = pos[rec.id]
        n["position"] = {"x": round(px, 1), "y": round(py, 1)}
        nodes.append(n)
    scene_ids = {rec.id for rec in scenes}
    edges = [next_edge(t) for t in transitions if t.from_id in scene_ids and t.to_id in scene_ids]

    ys = [p[1] for p in pos.values()] or [0.0]
    xs_all = [p[0] for p in pos.values()] or [0.0]
    mid_x = (min(xs_all) + max(xs_all)) / 2
    char_xs: dict[str, list[float]] = {c.id: [] for c in characters}
    env_xs: dict[str, list[float]] = {e.id: [] for e in environments}
    for rec in scenes:
        for cid in rec.spec.characters:
            if cid in char_xs:
                char_xs[cid].append(pos[rec.id][0])
        if rec.spec.environment in env_xs:
            env_xs[rec.spec.environment].append(pos[rec.id][0])
    char_pos = satellite_positions(char_xs, max(ys) + ROW_GAP, mid_x)
    env_pos = satellite_positions(env_xs, min(ys) - ROW_GAP, mid_x)
    for c in characters:
        x, y = char_pos[c.id]
        nodes.append({"data": {"id": c.id, "type": "character", "label": c.name, "name": c.name,
                               "description": c.description, "decay_tau": c.decay_tau,
                               "scenes": len(char_xs[c.id]), "has_reference": bool(c.reference_path)},
                      "position": {"x": round(x, 1), "y": round(y, 1)}, "classes": "character"})
    for e in environments:
        x, y = env_pos[e.id]
        nodes.append({"data": {"id": e.id, "type": "environment", "label": e.name or e.id, "name": e.name,
                               "description": e.description, "scenes": len(env_xs[e.id]),
                               "has_reference": bool(e.reference_path)},
                      "position": {"x": round(x, 1), "y": round(y, 1)}, "classes": "environment"})

    if not big:
        strength_init = float(store.memory.strength_init)
        apps = store.appearances(with_vectors=False)
        known_chars = set(char_xs)
        edges += [e for e in appears_edges(scenes, apps, strength_init) if e["data"]["source"] in known_chars]
        edges += [{"data": {"id": f"setin:{rec.id}>{rec.spec.environment}", "source": rec.id,
                            "target": rec.spec.environment, "type": "setin"}, "classes": "setin"}
                  for rec in scenes if rec.spec.environment in env_xs]

    meta = store.story_meta() or {}
    return {
        "story": {"id": meta.get("id") or store.story_id, "title": meta.get("title") or ""},
        "backend": store.backend,
        "last_seq": int(last_seq),
        "editable": bool(editable),
        "big": big,
        "layout": "preset",
        "dagre": len(scenes) <= dagre_max_scenes,
        "lanes": len(set(lanes.values())),
        "branches": branch_lanes(scenes, pos, lanes),
        "counts": {"scenes": len(scenes), "characters": len(characters), "environments": len(environments),
                   "transitions": sum(1 for e in edges if e["data"]["type"] == "next"),
                   "nodes": len(nodes), "edges": len(edges)},
        "nodes": nodes,
        "edges": edges,
    }


def scene_element(store, media: MediaLinks, scene_id: str) -> Optional[dict]:
    """One scene's node with its incoming NEXT edge and planned/observed APPEARS_IN edges (live updates)."""
    rec = store.scene(scene_id)
    if rec is None:
        return None
    node = scene_node(rec, media)
    strength_init = float(store.memory.strength_init)
    apps = store.appearances(scene_id=scene_id, with_vectors=False) if rec.takes else []
    edges = appears_edges([rec], apps, strength_init)
    return {"node": node, "edges": edges}


def finite(value):
    """``value`` with every float that is not finite (inf, nan) replaced by None: JSON has no such numbers, and a
    browser's JSON.parse refuses the ``Infinity`` Python would write."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, **options) -> str:
    """JSON text that any JSON parser reads: non-finite floats become null (see :func:`finite`)."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **options)


def jsonable(value, depth: int = 0, list_limit: int = 32):
    """A console result cell as JSON: nested values kept, long float vectors shortened, odd types as text."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        items = value.items()
        if "_LABEL" in value or "_label" in value:  # a node or relationship: drop the empty columns
            items = [(k, v) for k, v in items if v is not None]
        return {str(k): jsonable(v, depth + 1) for k, v in items}
    if isinstance(value, (list, tuple)):
        if len(value) > list_limit:
            head = [jsonable(v, depth + 1) for v in value[:8]]
            return head + [f"… {len(value) - 8} more"]
        return [jsonable(v, depth + 1) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)



def result_graph(rows, limit: int = 2000) -> dict:
    """The nodes and relationships inside console result cells, as Cytoscape elements: ``{nodes, edges}``.

    A node is a map with ``_LABEL`` and ``_ID`` (LadybugDB's form; Neo4j results are given the same keys); a
    relationship also has ``_SRC`` and ``_DST``; paths and lists are searched inside. A relationship whose end
    is not in the result gets a stub node. ``ref`` names the story element a node is (its ``id``), so the page
    can select it in the story graph."""
    nodes: dict = {}
    edges: dict = {}

    def key(x) -> str:
        if isinstance(x, dict):
            return f"{x.get('table')}:{x.get('offset')}"
        return str(x)

    def visit(v, depth=0):
        if depth > 8 or len(nodes) + len(edges) >= limit:
            return
        if isinstance(v, dict):
            if "_LABEL" in v and "_ID" in v:
                if "_SRC" in v and "_DST" in v:
                    k = key(v["_ID"])
                    edges.setdefault(k, {"data": {"id": "r:" + k, "source": "n:" + key(v["_SRC"]),
                                                  "target": "n:" + key(v["_DST"]), "label": v["_LABEL"]}})
                else:
                    k = key(v["_ID"])
                    ident = v.get("id") if isinstance(v.get("id"), str) else None
                    name = v.get("name") or v.get("title") or ident or k
                    nodes.setdefault(k, {"data": {"id": "n:" + k, "label": f"{v['_LABEL']}\n{name}",
                                                  "kind": v["_LABEL"], "ref": ident}})
                    return
            for x in v.values():
                visit(x, depth + 1)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x, depth + 1)

    for row in rows:
        for cell in row:
            visit(cell)
    for e in edges.values():
        for end in ("source", "target"):
            nid = e["data"][end]
            if nid[2:] not in nodes:
                nodes[nid[2:]] = {"data": {"id": nid, "label": "…", "kind": "", "ref": None}}
    return {"nodes": list(nodes.values()), "edges": list(edges.values())}
