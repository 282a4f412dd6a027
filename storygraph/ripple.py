"""Edits that ripple through a story: what changed between two states of it, and which generated scenes are stale.

A generated scene is made from its spec, its cast and place, its position on a timeline, and what its chosen take
was conditioned on (``CONDITIONED_ON``: the parent's frames it extends, earlier appearances used as memory,
reference images). When any of those changes, the scene is *stale*: it keeps its media until it is made again, and
says why. Staleness spreads along dependencies only: a scene is stale when something it was made from changed or
is stale-making itself — its parent's chosen take when it extends it, a scene whose appearance it used as memory —
transitively; a sibling branch or a later scene that used none of it is untouched.

Two kinds of change start it:

- *changed* scenes are stale themselves (their spec was edited, their incoming transition or their timeline
  changed, their media went missing, a character or environment they show changed);
- *sources* are scenes whose output changed (another take was chosen, the scene was deleted): scenes made from
  them are stale, they are not.

:func:`stale_marks` walks the dependency rows the graph returns for every generated scene (one query, see
``storygraph/cypher/stale_dependencies.cypher``) from those starting points: one pass over the rows, so its cost
grows linearly with the story. Pure: no database, no files.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field, fields
from typing import Iterable, Mapping, Optional

from .domain import Character, Environment, Placement, SceneSpec

__all__ = [
    "Cause", "Mark", "Dependent", "StoryChanges", "spec_changes", "character_changes", "environment_changes",
    "subtree", "dependents_from_rows", "stale_marks",
]


@dataclass(frozen=True)
class Cause:
    """Why a scene changed: ``origin`` is the scene the change came from, ``text`` says what changed."""

    origin: str
    text: str


@dataclass(frozen=True)
class Mark:
    """A scene to mark stale: the reason in words and the scene the change came from."""

    scene_id: str
    reason: str
    origin: str


def reason_for(scene_id: str, cause: Cause, via: Optional[str] = None) -> str:
    """The ``stale_reason`` of ``scene_id`` for ``cause``, reached through ``via`` (the scene it was made from)."""
    if cause.origin == scene_id:
        return cause.text
    text = f"upstream {cause.origin}: {cause.text}"
    return text if via in (None, cause.origin) else f"{text} (made from {via})"


# -- what changed -------------------------------------------------------------------------------------------------
_SPEC_FIELDS = tuple(f.name for f in fields(SceneSpec) if f.name != "id")


def _references_key(refs, known_sha: bool):
    return tuple((r.sha if known_sha else r.path, r.kind, r.character, int(r.frame_index), float(r.strength))
                 for r in refs)


def spec_changes(old: SceneSpec, new: SceneSpec) -> list[str]:
    """The spec fields (``lighting``, ``characters``, ``references``, ``steps`` …) that differ between two specs of
    a scene. A reference image is compared by its bytes' fingerprint where both specs know it (the same picture
    at another path is no change), else by its path."""
    out = []
    for name in _SPEC_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if name == "references":
            known = all(r.sha is not None for r in (*a, *b))
            if _references_key(a, known) != _references_key(b, known):
                out.append(name)
        elif name == "characters":
            if tuple(a) != tuple(b):
                out.append(name)
        elif _value(a) != _value(b):
            out.append(name)
    return out


def _value(x):
    """A spec value as compared: empty text is no text, numbers by value (24 == 24.0)."""
    if isinstance(x, str):
        return x or None
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return x


def _reference_changed(old_path, old_sha, new_path, new_sha) -> bool:
    """By the image's fingerprint where both are known (a picture replaced in place is a change, the same picture
    at another path is not), else by path."""
    if old_sha is not None and new_sha is not None:
        return old_sha != new_sha
    return (old_path or None) != (new_path or None)


def character_changes(old: Character, new: Character) -> list[str]:
    """What of a character changed, as far as the scenes made with it are concerned."""
    out = [n for n in ("name", "description") if (getattr(old, n) or "") != (getattr(new, n) or "")]
    if _reference_changed(old.reference_path, old.reference_sha, new.reference_path, new.reference_sha):
        out.append("reference")
    if (old.decay_tau is None) != (new.decay_tau is None) or (
            old.decay_tau is not None and float(old.decay_tau) != float(new.decay_tau)):
        out.append("decay_tau")
    return out


def environment_changes(old: Environment, new: Environment) -> list[str]:
    out = [n for n in ("name", "description") if (getattr(old, n) or "") != (getattr(new, n) or "")]
    if _reference_changed(old.reference_path, old.reference_sha, new.reference_path, new.reference_sha):
        out.append("reference")
    return out


def subtree(placements: Mapping[str, Placement], root: str) -> list[str]:
    """``root`` and every scene after it on any timeline through it (by placement: no path query)."""
    r = placements.get(root)
    if r is None:
        return []
    return [root] + sorted(s for s, p in placements.items() if s != root and p.has_ancestor(r.branch, r.pos))


@dataclass
class StoryChanges:
    """The difference between the story in the graph and a new state of it (a re-loaded file, an edit)."""

    scenes: dict = field(default_factory=dict)  # scene id -> changed spec fields
    characters: dict = field(default_factory=dict)  # character id -> changed fields
    environments: dict = field(default_factory=dict)  # environment id -> changed fields
    transitions: dict = field(default_factory=dict)  # scene id -> changed fields of its incoming transition
    moved: dict = field(default_factory=dict)  # scene id -> (old parent, new parent)
    added: list = field(default_factory=list)  # scene ids new to the graph
    missing: list = field(default_factory=list)  # scene ids in the graph and not in the new state (kept)
    placed: list = field(default_factory=list)  # scene ids whose placement (clock, branch, position) changed

    def __bool__(self) -> bool:
        return any((self.scenes, self.characters, self.environments, self.transitions, self.moved, self.added))

    def changed_scenes(self, placements: Mapping[str, Placement]) -> dict[str, Cause]:
        """Scenes stale themselves, with their cause: edited specs, changed incoming transitions, and every scene of
        a moved subtree (its timeline is another one now)."""
        out: dict[str, Cause] = {}
        for sid in sorted(self.moved):
            old, new = self.moved[sid]
            text = f"moved: now follows {new}" if new else f"moved: detached from {old}"
            for s in subtree(placements, sid):
                out.setdefault(s, Cause(sid, text))
        for sid in sorted(self.transitions):
            parent = placements[sid].parent_id if sid in placements else None
            out.setdefault(sid, Cause(sid, f"transition from {parent} changed: {', '.join(self.transitions[sid])}"))
        for sid in sorted(self.scenes):
            out.setdefault(sid, Cause(sid, "edited: " + ", ".join(self.scenes[sid])))
        return out

    def summary(self) -> dict:
        return {"scenes": dict(self.scenes), "characters": dict(self.characters),
                "environments": dict(self.environments), "transitions": dict(self.transitions),
                "moved": {k: list(v) for k, v in self.moved.items()}, "added": list(self.added),
                "missing": list(self.missing), "placed": list(self.placed)}


# -- who depends on what -------------------------------------------------------------------------------------------
@dataclass
class Dependent:
    """A scene with a chosen take, and what that take was made from."""

    id: str
    status: str
    characters: tuple = ()
    environment: Optional[str] = None
    clock: float = 0.0
    pos: int = 0
    scenes: set = field(default_factory=set)  # scenes whose frames or appearances it used
    references: set = field(default_factory=set)  # reference images it was conditioned on


def dependents_from_rows(rows: Iterable[dict]) -> dict[str, Dependent]:
    """Group the rows of ``stale_dependencies``: one per (scene, conditioning target), or per scene with none."""
    out: dict[str, Dependent] = {}
    for r in rows:
        d = out.get(r["id"])
        if d is None:
            d = out[r["id"]] = Dependent(r["id"], r["status"] or "", tuple(r["characters"] or ()), r["environment"],
                                         float(r["clock"] or 0.0), int(r["pos"] or 0))
        kind = r.get("kind")
        if kind == "Scene" and r.get("target"):
            d.scenes.add(r["target"])
        elif kind == "Appearance" and r.get("target_scene"):
            if r["target_scene"] != d.id:
                d.scenes.add(r["target_scene"])
        elif kind == "Reference" and r.get("target"):
            d.references.add(r["target"])
    return out


def stale_marks(dependents: Mapping[str, Dependent], *, changed: Mapping[str, Cause] = {},
                sources: Mapping[str, Cause] = {}, characters: Mapping[str, str] = {},
                environments: Mapping[str, str] = {}, references: Mapping[str, str] = {}) -> dict[str, Mark]:
    """Every generated scene that is stale after a change, with its reason.

    ``changed``: scenes stale themselves. ``sources``: scenes whose output changed (not stale themselves).
    ``characters`` / ``environments`` / ``references``: what changed of each (in words); the generated scenes that
    show the character, are set in the place or were conditioned on the image are stale themselves. Then every
    scene made from a stale scene or a source is stale, transitively. Only scenes in ``dependents`` (those with a
    chosen take) are marked; the first cause to reach a scene names it.
    """
    order = sorted(dependents.values(), key=lambda d: (d.clock, d.pos, d.id))
    made_from: dict[str, list[str]] = defaultdict(list)
    for d in order:
        for x in sorted(d.scenes):
            made_from[x].append(d.id)
    marks: dict[str, Mark] = {}
    cause_of: dict[str, Cause] = {}
    queue: deque = deque()

    def mark(sid: str, cause: Cause, via: Optional[str] = None) -> None:
        if sid in marks or sid in sources:
            return
        marks[sid] = Mark(sid, reason_for(sid, cause, via), cause.origin)
        cause_of[sid] = cause
        queue.append(sid)

    for sid in sorted(changed):
        if sid in dependents:
            mark(sid, changed[sid])
        else:  # nothing to mark (no media), but scenes made from it — if any — still are
            cause_of[sid] = changed[sid]
            queue.append(sid)
    for d in order:
        whats = [f"character {c} changed: {characters[c]}" for c in d.characters if c in characters]
        if d.environment in environments:
            whats.append(f"environment {d.environment} changed: {environments[d.environment]}")
        whats += [f"reference {r} changed: {references[r]}" for r in sorted(d.references) if r in references]
        if whats:
            mark(d.id, Cause(d.id, "; ".join(whats)))
    for sid in sorted(sources):
        cause_of[sid] = sources[sid]
        queue.append(sid)
    while queue:
        x = queue.popleft()
        for y in made_from.get(x, ()):
            mark(y, cause_of[x], via=x)
    return marks
