"""Story operations written once over named queries; each backend supplies transactions and a dialect.

A backend subclass provides ``dialect``, ``_transaction(write)`` (a context manager yielding a callable
``run(cypher, params) -> list[dict]`` that commits on success and rolls back on error), ``setup_schema``,
``_user_query`` and ``close``. Everything else — loading a story, committing a take, the event log —
lives here, so both backends behave the same by construction and the contract tests check it.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

from ..domain import (
    EMPTY_LINEAGE, SCENE_STATUSES, TRANSITION_KINDS, Appearance, Character, ConditionRecord, Environment, Event,
    GenerationDefaults, Lineage, MemoryParams, Placement, Reference, SceneSpec, Scores, Story, Transition,
    generation_settings,
)
from ..faults import crash_point
from ..mediapaths import is_migratable, relative
from ..ripple import (
    Cause, Mark, StoryChanges, character_changes, dependents_from_rows, environment_changes, spec_changes, stale_marks,
)
from ..timeline import place_scenes, transition_decay
from . import queries
from .readonly import check_read_only
from .store import (
    LoadSummary, QueryResult, RecordNotFound, SceneCommit, SceneContext, SceneRecord, StoreConflict,
    StoreInputError, TakeRecord, TransitionRecord,
)

Run = Callable[[str, Optional[dict]], list]

#: Rows per execution of an ``UNWIND $rows`` write (see ``CypherStore._batched``).
UNWIND_BATCH = 1000

#: An edit that makes more scenes stale than this writes one ``story.stale`` Event instead of one per scene.
STALE_EVENTS_MAX = 200

#: Time limit and row limit of a read-only query when the caller names none.
DEFAULT_QUERY_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 100_000


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def take_key(scene_id: str, take: int) -> str:
    return f"{scene_id}#take{take}"


def _scene_row(spec: SceneSpec, p: Placement) -> dict:
    row = {
        "id": spec.id, "title": spec.title, "action": spec.action, "characters": list(spec.characters),
        "environment": spec.environment, "lighting": spec.lighting, "weather": spec.weather, "camera": spec.camera,
        "refs": json.dumps([asdict(r) for r in spec.references]), "memory": spec.memory,
        "clock": float(p.clock), "branch": p.branch, "pos": int(p.pos), "parent_id": p.parent_id,
    }
    for name, kind, _ in generation_settings():  # typed as the schema declares them (INT64, DOUBLE, STRING)
        value = getattr(spec, name)
        row[name] = None if value is None else kind(value)
    return row


def _scores(d: dict, **extra) -> Scores:
    return Scores(**{name: d.get(name) for name in Scores.names()}, **extra)


def scene_from_props(d: dict, lineage: Lineage = EMPTY_LINEAGE) -> SceneRecord:
    """A scene record from its graph properties. The graph keeps no lineage (it would cost O(depth) per scene):
    the store's reads work it out from the branches' first scenes and pass it here."""
    refs = tuple(Reference(**r) for r in json.loads(d.get("refs") or "[]"))
    spec = SceneSpec(
        id=d["id"], action=d.get("action") or "", characters=tuple(d.get("characters") or ()),
        environment=d.get("environment"), title=d.get("title") or "", lighting=d.get("lighting") or "",
        weather=d.get("weather") or "", camera=d.get("camera") or "", references=refs, memory=d.get("memory") or None,
        **{name: d.get(name) for name, _, _ in generation_settings()},
    )
    placement = Placement(d["id"], float(d.get("clock") or 0.0), d.get("branch") or d["id"], int(d.get("pos") or 0),
                          d.get("parent_id"), lineage)
    scores = _scores(d)
    return SceneRecord(
        spec=spec, placement=placement, status=d.get("status") or "planned", prompt=d.get("prompt"),
        seed=d.get("seed"), video_path=d.get("video_path"), last_frame_path=d.get("last_frame_path"),
        frames_dir=d.get("frames_dir"), scores=scores, chosen_take=d.get("chosen_take"),
        takes=int(d.get("takes") or 0), notes=d.get("notes") or "", stale_reason=d.get("stale_reason") or "",
        stale_from=d.get("stale_from") or "",
    )


def character_from_row(r: dict) -> Character:
    return Character(r["id"], r["name"], r["description"] or "", r["reference_path"], r["decay_tau"],
                     r.get("reference_sha"))


def environment_from_row(r: dict) -> Environment:
    return Environment(r["id"], r["description"] or "", r["name"] or "", r["reference_path"], r.get("reference_sha"))


def _placement_row(p: Placement) -> dict:
    return {"id": p.scene_id, "clock": float(p.clock), "branch": p.branch, "pos": int(p.pos),
            "parent_id": p.parent_id}


def take_from_props(d: dict) -> TakeRecord:
    scores = _scores(d, identity_by_character=json.loads(d.get("identity_by_character") or "{}"))
    return TakeRecord(
        scene_id=d["scene_id"], take=int(d["take"]), seed=int(d.get("seed") or 0), prompt=d.get("prompt") or "",
        video_path=d.get("video_path") or "", last_frame_path=d.get("last_frame_path") or "",
        frames_dir=d.get("frames_dir") or "", scores=scores, chosen=bool(d.get("chosen")),
        request_key=d.get("request_key") or "",
    )


def appearance_from_row(d: dict) -> Appearance:
    return Appearance(
        id=d["id"], character_id=d["character_id"], scene_id=d["scene_id"], frame_index=int(d["frame_index"]),
        frame_path=d["frame_path"], strength=float(d["strength"]), reinforced_clock=float(d["reinforced_clock"]),
        identity_score=float(d["identity_score"]), clip=d.get("clip") or [], dino=d.get("dino") or [],
        clock=float(d["clock"]), branch=d["branch"], pos=int(d["pos"]), take=int(d["take"]),
        accepted=bool(d["accepted"]), uses=[parse_use(e) for e in d.get("uses") or ()],
    )


#: Version of the ``Appearance.uses`` lists a story holds (``Story.memory_index``); older stories are indexed once.
MEMORY_INDEX_VERSION = 1


def use_entry(scene_id: str, identity: Optional[float]) -> str:
    """One element of ``Appearance.uses``: the scene whose chosen take used the appearance, and the identity that
    take kept for the appearance's character ("-" when not measured). Ids hold no spaces."""
    return f"{scene_id} {'-' if identity is None else repr(float(identity))}"


def parse_use(entry: str) -> tuple[str, Optional[float]]:
    scene_id, _, identity = entry.partition(" ")
    return scene_id, None if identity in ("", "-") else float(identity)


_CONDITION_TARGETS = {"Appearance": "conditioned_on_appearance", "Scene": "conditioned_on_scene",
                      "Reference": "conditioned_on_reference"}


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class CypherStore:
    """Shared implementation of :class:`~storygraph.graphdb.store.StoryStore` over named queries."""

    backend = "?"
    dialect = "?"
    multi_story = True

    def __init__(self, story_id: Optional[str] = None, memory: Optional[MemoryParams] = None):
        self.story_id = story_id
        self.memory = memory or MemoryParams()

    # -- backend hooks ---------------------------------------------------------------------------
    def _backend_transaction(self, write: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    @contextmanager
    def _transaction(self, write: bool):
        if self.story_id is None:
            self._bind_story()
        with self._backend_transaction(write) as run:
            yield run

    def _user_query(self, cypher: str, params: dict, limits) -> QueryResult:  # pragma: no cover - abstract
        """Run a console query under the backend's own guard (the second one), within ``limits``."""
        raise NotImplementedError

    def _write_query(self, cypher: str, params: dict) -> QueryResult:
        with self._backend_transaction(write=True) as run:
            rows = run(cypher, params)
        cols = list(rows[0].keys()) if rows else []
        return QueryResult(cols, [[r[c] for c in cols] for r in rows])

    # -- helpers ---------------------------------------------------------------------------------
    def q(self, name: str) -> str:
        return queries.load(name, self.dialect)

    def _params(self, params: Optional[dict] = None) -> dict:
        if self.story_id is None:
            raise RecordNotFound("this graph holds no story yet: load a story file first (storygraph load STORY.yaml)")
        out = {"story": self.story_id}
        if params:
            out.update(params)
        return out

    def _bind_story(self) -> None:
        """Bind to the graph's story when it holds exactly one; with none, stay unbound."""
        stories = self.stories()
        if len(stories) == 1:
            self.story_id = stories[0]["id"]
        elif len(stories) > 1:
            names = ", ".join(s["id"] for s in stories)
            raise StoreInputError(f"this graph holds several stories ({names}): name one with --story")

    def _read(self, name: str, params: Optional[dict] = None) -> list[dict]:
        with self._transaction(write=False) as run:
            return run(self.q(name), self._params(params))

    # -- story structure -------------------------------------------------------------------------
    def stories(self) -> list[dict]:
        with self._backend_transaction(write=False) as run:
            return run(self.q("story_list"), {})

    def story_meta(self) -> Optional[dict]:
        rows = [s for s in self.stories() if self.story_id is None or s["id"] == self.story_id]
        return rows[0] if len(rows) == 1 else None

    def load_story(self, story: Story) -> LoadSummary:
        if self.story_id is None:
            self.story_id = story.id
        elif self.story_id != story.id:
            raise StoreConflict(f"this store is bound to story {self.story_id!r}, not {story.id!r}")
        if not self.multi_story:
            others = [s["id"] for s in self.stories() if s["id"] != story.id]
            if others:
                raise StoreConflict(
                    f"this story folder holds story {others[0]!r}; an embedded story folder holds one story, so "
                    f"{story.id!r} goes into a folder of its own (or into Neo4j, which keeps several stories)")
        new_specs = {s.id: s.resolved(story.defaults) for s in story.scenes}
        before = self._counts()
        with self._transaction(write=True) as run:
            p = self._params
            old_scenes = {r["scene"]["id"]: scene_from_props(r["scene"]) for r in run(self.q("scenes_all"), p())}
            old_edges = run(self.q("transitions_all"), p())
            old_transitions = {t["to_id"]: t for t in old_edges}
            # scenes the graph has and the file does not are kept, with the transitions into them
            kept = [sid for sid in old_scenes if sid not in new_specs]
            transitions = list(story.transitions) + [
                Transition(t["from_id"], t["to_id"], t["kind"], t["gap"]) for sid, t in old_transitions.items()
                if sid in kept]
            placements = place_scenes(list(new_specs) + kept, transitions)
            changes = self._story_changes(run, story, new_specs, old_scenes, old_transitions, placements)
            run(self.q("story_upsert"), p({
                "title": story.title, "source_path": story.source_path,
                "defaults": json.dumps(asdict(story.defaults)), "now": now_iso()}))
            # a scene of the file whose incoming transition is gone or comes from another scene loses the old one
            gone = [{"from_id": t["from_id"], "to_id": t["to_id"]} for t in old_edges
                    if t["to_id"] in new_specs and placements[t["to_id"]].parent_id != t["from_id"]]
            if gone:
                run(self.q("transitions_delete"), p({"rows": gone}))
            self._write_structure(run, story.characters, story.environments,
                                  [(spec, placements[sid]) for sid, spec in new_specs.items()], story.transitions,
                                  scene_ids=old_scenes.keys())
            placed = {sid: placements[sid] for sid in old_scenes
                      if not placements[sid].same_place(old_scenes[sid].placement)}
            self._place(run, placed)
            changes.placed = sorted(placed)
            marks = self._ripple(run, changed=changes.changed_scenes(placements),
                                 characters={c: ", ".join(f) for c, f in changes.characters.items()},
                                 environments={e: ", ".join(f) for e, f in changes.environments.items()})
        after = self._counts()
        created = {k: after[k] - before.get(k, 0) for k in after}
        if any(created.values()) or changes:  # followers (viewers) rebuild on it; an unchanged reload writes nothing
            self.append_event("story.loaded", story.id, {**created, "changed": bool(changes), "stale": len(marks)})
        return LoadSummary(len(story.characters), len(story.environments), len(story.scenes),
                           len(story.transitions), created, changes.summary(), {m.scene_id: m.reason for m in marks})

    def _story_changes(self, run: Run, story: Story, new_specs: dict, old_scenes: dict, old_transitions: dict,
                       placements: dict) -> StoryChanges:
        """What a story file changes in the graph (read inside the transaction that applies it)."""
        p = self._params
        changes = StoryChanges()
        old_chars = {r["id"]: character_from_row(r) for r in run(self.q("characters_all"), p())}
        old_envs = {r["id"]: environment_from_row(r) for r in run(self.q("environments_all"), p())}
        for c in story.characters:
            if c.id in old_chars and (changed := character_changes(old_chars[c.id], c)):
                changes.characters[c.id] = changed
        for e in story.environments:
            if e.id in old_envs and (changed := environment_changes(old_envs[e.id], e)):
                changes.environments[e.id] = changed
        new_in = {t.to_id: t for t in story.transitions}
        for sid, spec in new_specs.items():
            old = old_scenes.get(sid)
            if old is None:
                changes.added.append(sid)
                continue
            fields_changed = spec_changes(old.spec, spec)
            if "seed" in fields_changed and old.chosen_take is not None and spec.seed is not None and \
                    old.spec.seed == spec.seed + old.chosen_take:
                fields_changed.remove("seed")  # older versions kept the chosen take's seed in the scene's
            if fields_changed:
                changes.scenes[sid] = fields_changed
            if placements[sid].parent_id != old.placement.parent_id:
                changes.moved[sid] = (old.placement.parent_id, placements[sid].parent_id)
            elif sid in new_in and sid in old_transitions:
                t, o = new_in[sid], old_transitions[sid]
                diff = [n for n, a, b in (("kind", o["kind"], t.kind), ("gap", float(o["gap"]), t.effective_gap))
                        if a != b]
                if diff:
                    changes.transitions[sid] = diff
        changes.missing = sorted(sid for sid in old_scenes if sid not in new_specs)
        return changes

    def _write_structure(self, run: Run, characters, environments, scenes, transitions,
                         scene_ids: Optional[Iterable[str]] = None) -> None:
        """``scene_ids``: the story's scenes before the write, when the caller has already read them."""
        each = self._batched(run)
        if characters:
            self._upsert(run, "character", "characters", [
                {"id": c.id, "name": c.name, "description": c.description, "reference_path": c.reference_path,
                 "decay_tau": _finite(c.decay_tau), "reference_sha": c.reference_sha} for c in characters])
        if environments:
            self._upsert(run, "environment", "environments", [
                {"id": e.id, "name": e.name, "description": e.description, "reference_path": e.reference_path,
                 "reference_sha": e.reference_sha}
                for e in environments])
        if scenes:
            ids = [spec.id for spec, _ in scenes]
            self._upsert(run, "scene", "scenes", [_scene_row(s, pl) for s, pl in scenes], scene_ids)
            for name in ("scene_story_link", "scene_environment_clear", "scene_environment_link", "appears_in_prune"):
                each(name, "ids", ids)
            each("appears_in_plan", "rows", ({"scene": s.id, "character": c} for s, _ in scenes for c in s.characters),
                 strength=float(self.memory.strength_init))
        if transitions:
            rows = [{"from_id": t.from_id, "to_id": t.to_id, "kind": t.kind, "gap": float(t.effective_gap),
                     "decay": transition_decay(t.effective_gap, self.memory.tau_story)} for t in transitions]
            each("transitions_replace", "rows", rows)  # a scene has one incoming transition
            each("transitions_upsert", "rows", rows)

    def _upsert(self, run: Run, kind: str, plural: str, rows: list[dict],
                have: Optional[Iterable[str]] = None) -> None:
        """Create the rows the story lacks and update the others (``<plural>_create``, ``<plural>_upsert``).

        Not MERGE: LadybugDB's MERGE grows slower with the table (a load of n scenes cost O(n^2)), and a node
        created whole costs half the time and memory of one created bare and then set. Reading the story's
        ids is one scan (none when the caller gives them as ``have``)."""
        have = set(have) if have is not None else {r["id"] for r in run(self.q(f"{kind}_ids"), self._params())}
        each = self._batched(run)
        each(f"{plural}_create", "rows", (r for r in rows if r["id"] not in have), now=now_iso())
        each(f"{plural}_upsert", "rows", (r for r in rows if r["id"] in have))

    def _batched(self, run: Run) -> Callable:
        """``each(query, key, items, **params)``: run a named ``UNWIND $key`` query over ``items`` in batches of
        :data:`UNWIND_BATCH`, in the caller's transaction (nothing for no items). LadybugDB holds a list
        parameter at tens of kilobytes per row: one batch of a 50,000-scene story took gigabytes."""

        def each(name: str, key: str, items: Iterable, **params) -> None:
            query, batch = self.q(name), []
            for item in items:
                batch.append(item)
                if len(batch) == UNWIND_BATCH:
                    run(query, self._params({key: batch, **params}))
                    batch = []
            if batch:
                run(query, self._params({key: batch, **params}))
        return each

    def _place(self, run: Run, placements: Mapping[str, Placement]) -> None:
        """New placements of scenes (a transition moved them) and of their appearances, which carry a copy."""
        if placements:
            rows = [_placement_row(pl) for pl in placements.values()]
            run(self.q("scenes_place"), self._params({"rows": rows}))
            run(self.q("appearances_place"), self._params({"rows": rows}))

    # -- staleness -------------------------------------------------------------------------------
    def _ripple(self, run: Run, *, changed: Mapping[str, Cause] = {}, sources: Mapping[str, Cause] = {},
                characters: Mapping[str, str] = {}, environments: Mapping[str, str] = {},
                references: Mapping[str, str] = {}) -> list[Mark]:
        """Mark what a change makes stale, inside the caller's transaction: one read of the dependency rows (from
        the earliest changed scene on, when only scenes changed), a linear walk over them, one write."""
        if not (changed or sources or characters or environments or references):
            return []
        from_clock = -1e300
        if not (characters or environments or references):
            clocks = [r["clock"] for r in run(self.q("scenes_clock"), self._params({"ids": [*changed, *sources]}))]
            if not clocks:
                return []
            from_clock = float(min(clocks))
        rows = run(self.q("stale_dependencies"), self._params({"from_clock": from_clock}))
        marks = stale_marks(dependents_from_rows(rows), changed=changed, sources=sources, characters=characters,
                            environments=environments, references=references)
        if not marks:
            return []
        marked = {r["id"] for r in run(self.q("scenes_mark_stale"), self._params({
            "rows": [{"id": m.scene_id, "reason": m.reason, "origin": m.origin} for m in marks.values()],
            "now": now_iso()}))}
        out = [m for m in marks.values() if m.scene_id in marked]
        if len(out) <= STALE_EVENTS_MAX:  # followers patch these scenes
            for m in out:
                self._event(run, "scene.stale", m.scene_id, {"reason": m.reason, "from": m.origin})
        elif out:  # followers rebuild: one Event, not thousands
            origins = sorted({m.origin for m in out})
            self._event(run, "story.stale", self.story_id, {"count": len(out), "from": origins[:20]})
        return out

    def stale_dependencies(self, from_clock: Optional[float] = None) -> list[dict]:
        return self._read("stale_dependencies", {"from_clock": -1e300 if from_clock is None else float(from_clock)})

    def mark_stale(self, changed: Mapping[str, Cause]) -> dict:
        with self._transaction(write=True) as run:
            return {m.scene_id: m.reason for m in self._ripple(run, changed=changed)}

    def mark_interrupted(self) -> list[str]:
        if self.story_id is None and not self.stories():
            return []
        with self._transaction(write=True) as run:
            ids = [r["id"] for r in run(self.q("scenes_interrupt"), self._params({
                "note": "interrupted: the process generating it stopped\n", "now": now_iso()}))]
            for sid in ids:
                self._event(run, "scene.interrupted", sid, None)
            return ids

    # -- story structure, edited ------------------------------------------------------------------
    def _count_label(self, run: Run, label: str) -> int:
        return int(run(self.q(f"count_{label.lower()}"), {"story": self.story_id})[0]["n"])

    def _counts(self) -> dict:
        out = {}
        with self._transaction(write=False) as run:
            for label in ("Story", "Character", "Environment", "Scene", "Appearance", "Take", "Event"):
                out[label] = self._count_label(run, label)
        return out

    def upsert_character(self, character: Character) -> dict:
        with self._transaction(write=True) as run:
            old = run(self.q("characters_by_ids"), self._params({"ids": [character.id]}))
            changed = character_changes(character_from_row(old[0]), character) if old else []
            self._write_structure(run, [character], [], [], [])
            marks = self._ripple(run, characters={character.id: ", ".join(changed)}) if changed else []
            return {m.scene_id: m.reason for m in marks}

    def upsert_environment(self, environment: Environment) -> dict:
        with self._transaction(write=True) as run:
            old = run(self.q("environment_get"), self._params({"id": environment.id}))
            changed = environment_changes(environment_from_row(old[0]), environment) if old else []
            self._write_structure(run, [], [environment], [], [])
            marks = self._ripple(run, environments={environment.id: ", ".join(changed)}) if changed else []
            return {m.scene_id: m.reason for m in marks}

    def defaults(self) -> GenerationDefaults:
        meta = self.story_meta()
        return GenerationDefaults(**json.loads(meta["defaults"])) if meta and meta.get("defaults") else GenerationDefaults()

    def upsert_scene(self, spec: SceneSpec, placement: Placement) -> None:
        spec = spec.resolved(self.defaults())
        with self._transaction(write=True) as run:
            self._write_structure(run, [], [], [(spec, placement)], [])

    def update_scene(self, spec: SceneSpec) -> dict:
        spec = spec.resolved(self.defaults())
        with self._transaction(write=True) as run:
            rows = run(self.q("scene_get"), self._params({"id": spec.id}))
            if not rows:
                raise RecordNotFound(f"no scene {spec.id!r}")
            old = scene_from_props(rows[0]["scene"])
            changed = spec_changes(old.spec, spec)
            self._write_structure(run, [], [], [(spec, old.placement)], [])
            if not changed:
                return {}
            marks = self._ripple(run, changed={spec.id: Cause(spec.id, "edited: " + ", ".join(changed))})
            if old.chosen_take is None and old.status not in ("planned", "generating"):
                run(self.q("scene_set_status"), self._params({
                    "id": spec.id, "status": "planned", "note": "edited\n", "now": now_iso()}))
                self._event(run, "scene.planned", spec.id, {"note": "edited"})
            elif not marks:
                self._event(run, "scene.updated", spec.id, {"changed": changed})
            return {m.scene_id: m.reason for m in marks}

    def upsert_transition(self, transition: TransitionRecord) -> None:
        self.set_timeline(upsert=[transition])

    def set_timeline(self, upsert: Sequence[TransitionRecord] = (), delete: Sequence[tuple[str, str]] = (),
                     placements: Mapping[str, Placement] = {}, changed: Mapping[str, Cause] = {}) -> dict:
        for t in upsert:
            if t.kind not in TRANSITION_KINDS:
                raise StoreInputError(f"unknown transition kind {t.kind!r}")
        with self._transaction(write=True) as run:
            p = self._params
            if delete:
                run(self.q("transitions_delete"), p({"rows": [{"from_id": a, "to_id": b} for a, b in delete]}))
            if upsert:
                rows = [{"from_id": t.from_id, "to_id": t.to_id, "kind": t.kind, "gap": float(t.gap),
                         "decay": float(t.decay)} for t in upsert]
                run(self.q("transitions_replace"), p({"rows": rows}))
                run(self.q("transitions_upsert"), p({"rows": rows}))
            self._place(run, placements)
            return {m.scene_id: m.reason for m in self._ripple(run, changed=changed)}

    def delete_scenes(self, ids: Sequence[str], placements: Mapping[str, Placement] = {}) -> dict:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        with self._transaction(write=True) as run:
            p = self._params
            found = {r["id"] for r in run(self.q("scenes_clock"), p({"ids": ids}))}
            missing = [sid for sid in ids if sid not in found]
            if missing:
                raise RecordNotFound(f"no scene {missing[0]!r}")
            marks = self._ripple(run, sources={sid: Cause(sid, "deleted") for sid in ids})
            for r in run(self.q("scenes_clock"), p({"ids": ids})):
                if r["chosen_take"] is not None:  # the memories it used no longer count it
                    self._move_uses(run, r["id"], r["chosen_take"], None)
            run(self.q("appearances_delete_of_scenes"), p({"ids": ids}))
            run(self.q("takes_delete_of_scenes"), p({"ids": ids}))
            run(self.q("scenes_delete"), p({"ids": ids}))
            self._place(run, {sid: pl for sid, pl in placements.items() if sid not in found})
            for sid in ids:
                self._event(run, "scene.deleted", sid, None)
            return {m.scene_id: m.reason for m in marks}

    def ids(self, kind: str) -> list[str]:
        """The ids of the story's characters, environments or scenes (``kind``: character | environment | scene)."""
        if kind not in ("character", "environment", "scene"):
            raise StoreInputError(f"no ids of kind {kind!r}")
        return [r["id"] for r in self._read(f"{kind}_ids")]

    def characters(self) -> list[Character]:
        return [character_from_row(r) for r in self._read("characters_all")]

    def environments(self) -> list[Environment]:
        return [environment_from_row(r) for r in self._read("environments_all")]

    def transitions(self) -> list[TransitionRecord]:
        return [TransitionRecord(r["from_id"], r["to_id"], r["kind"], r["gap"], r["decay"])
                for r in self._read("transitions_all")]

    # -- media paths -----------------------------------------------------------------------------
    def migrate_media_paths(self, story_dir) -> int:
        """Absolute media paths (written before paths were relative, or into a folder moved since) rewritten
        relative to ``story_dir``, in one transaction; returns how many records changed."""
        if self.story_id is None and not self.stories():
            return 0
        with self._transaction(write=True) as run:
            p = self._params
            n = 0
            for label, fields_ in (("scenes", ("video_path", "last_frame_path", "frames_dir")),
                                   ("takes", ("video_path", "last_frame_path", "frames_dir")),
                                   ("appearances", ("frame_path",))):
                rows = [r for r in run(self.q(f"media_paths_{label}"), p())
                        if any(is_migratable(story_dir, r[f]) for f in fields_)]
                if rows:
                    run(self.q(f"media_paths_set_{label}"), p({"rows": [
                        {"id": r["id"], **{f: relative(story_dir, r[f]) for f in fields_}} for r in rows]}))
                    n += len(rows)
            return n

    # -- scenes ----------------------------------------------------------------------------------
    def scene(self, scene_id: str) -> Optional[SceneRecord]:
        with self._transaction(write=False) as run:
            rows = run(self.q("scene_get"), self._params({"id": scene_id}))
            return self._records(run, [rows[0]["scene"]])[0] if rows else None

    def scenes(self, status: Optional[str] = None) -> list[SceneRecord]:
        with self._transaction(write=False) as run:
            if status is None:
                rows = run(self.q("scenes_all"), self._params())
            else:
                rows = run(self.q("scenes_by_status"), self._params({"status": status}))
            return self._records(run, [r["scene"] for r in rows])

    def _records(self, run: Run, props: list[dict]) -> list[SceneRecord]:
        lineage = self._lineages(run, props)
        return [scene_from_props(d, lineage(d.get("branch") or d["id"])) for d in props]

    def _lineages(self, run: Run, props: list[dict]) -> Callable[[str], Lineage]:
        """Lineage by branch, for scenes read as ``props``. A branch is named after its first scene, whose parent
        ends the branch it forked from: lineage(b) = lineage(parent's branch) + (parent's branch, parent's pos).
        Heads and parents among ``props`` cost nothing (a read of every scene makes no query); the others cost
        one lookup per branch on the way up. Each lineage shares its parent's links: O(branches) in all."""
        by_id = {d["id"]: d for d in props}
        memo: dict[str, Lineage] = {}

        def fork_of(branch: str) -> Optional[tuple[str, int]]:
            head = by_id.get(branch)
            if head is not None:
                if head.get("parent_id") is None:
                    return None
                parent = by_id.get(head["parent_id"])
                if parent is not None:
                    return parent.get("branch") or parent["id"], int(parent.get("pos") or 0)
            rows = run(self.q("scene_fork"), self._params({"branch": branch}))
            return (rows[0]["branch"], int(rows[0]["pos"] or 0)) if rows and rows[0]["branch"] else None

        def lineage(branch: str) -> Lineage:
            pending: list[tuple[str, tuple[str, int]]] = []
            b = branch
            while b not in memo:
                fork = fork_of(b)
                if fork is None or fork[0] == b or any(fork[0] == x for x, _ in pending):
                    memo[b] = EMPTY_LINEAGE  # a root (or a broken link, which never loops)
                    break
                pending.append((b, fork))
                b = fork[0]
            for b, (pb, pos) in reversed(pending):
                memo[b] = memo[pb].then(pb, pos)
            return memo[branch]

        return lineage

    def scene_context(self, scene_id: str) -> SceneContext:
        """The scene, its parent and transition, cast and environment: primary-key lookups only, so the cost
        does not grow with the story (the scene stores its parent id, cast and environment)."""
        with self._transaction(write=False) as run:
            rows = run(self.q("scene_get"), self._params({"id": scene_id}))
            if not rows:
                raise RecordNotFound(f"no scene {scene_id!r} in story {self.story_id!r}")
            props = [rows[0]["scene"]]
            parent = transition = environment = None
            parent_id = props[0].get("parent_id")
            link = run(self.q("scene_context"), self._params({"id": scene_id, "parent": parent_id})) \
                if parent_id is not None else []
            if link and link[0]["parent"]:
                props.append(link[0]["parent"])
            records = self._records(run, props)
            scene = records[0]
            if len(records) > 1:
                parent, r = records[1], link[0]
                transition = TransitionRecord(parent.id, scene_id, r["kind"], r["gap"], r["decay"])
            chars = run(self.q("characters_by_ids"), self._params({"ids": list(scene.spec.characters)})) \
                if scene.spec.characters else []
            if scene.spec.environment:
                env = run(self.q("environment_get"), self._params({"id": scene.spec.environment}))
                if env:
                    e = env[0]
                    environment = Environment(e["id"], e["description"] or "", e["name"] or "", e["reference_path"])
        characters = [Character(c["id"], c["name"], c["description"] or "", c["reference_path"], c["decay_tau"])
                      for c in chars]
        return SceneContext(scene, characters, environment, parent, transition)

    def set_scene_status(self, scene_id: str, status: str, note: Optional[str] = None) -> int:
        if status not in SCENE_STATUSES:
            raise StoreInputError(f"unknown scene status {status!r}")
        with self._transaction(write=True) as run:
            rows = run(self.q("scene_set_status"), self._params({
                "id": scene_id, "status": status, "note": f"{note}\n" if note else "", "now": now_iso()}))
            if not rows:
                raise RecordNotFound(f"no scene {scene_id!r}")
            return self._event(run, f"scene.{status}", scene_id, {"note": note} if note else None)

    # -- memory ----------------------------------------------------------------------------------
    def commit_take(self, commit: SceneCommit) -> int:
        t = commit.take
        key = take_key(t.scene_id, t.take)
        p = self._params
        with self._transaction(write=True) as run:
            if run(self.q("take_exists"), p({"id": key})):
                return self.last_event_seq_in(run)
            s = t.scores
            made = run(self.q("take_create"), p({
                "id": key, "scene": t.scene_id, "take": int(t.take), "seed": int(t.seed), "prompt": t.prompt,
                "video_path": t.video_path, "last_frame_path": t.last_frame_path, "frames_dir": t.frames_dir,
                **{name: _finite(getattr(s, name)) for name in Scores.names()},
                "identity_by_character": json.dumps(s.identity_by_character), "request_key": t.request_key,
                "now": now_iso()}))
            if not made:
                raise RecordNotFound(f"no scene {t.scene_id!r} to commit a take to")
            crash_point("during_commit")
            if commit.appearances:
                run(self.q("appearances_create"), p({"rows": [{
                    "id": a.id, "character_id": a.character_id, "scene_id": a.scene_id, "take": int(a.take),
                    "frame_index": int(a.frame_index), "frame_path": a.frame_path, "strength": float(a.strength),
                    "reinforced_clock": float(a.reinforced_clock), "identity_score": float(a.identity_score),
                    "clock": float(a.clock), "branch": a.branch, "pos": int(a.pos),
                    "clip": [float(x) for x in a.clip], "dino": [float(x) for x in a.dino], "uses": [],
                } for a in commit.appearances]}))
            run(self.q("conditioned_on_clear"), p({"scene": t.scene_id, "take": int(t.take)}))
            unknown = {c.target_kind for c in commit.conditioned_on} - set(_CONDITION_TARGETS)
            if unknown:
                raise StoreInputError(f"cannot record conditioning on {sorted(unknown)}")
            for kind, name in _CONDITION_TARGETS.items():
                rows = [{"target_id": c.target_id, "role": c.role, "frame_index": int(c.frame_index),
                         "strength": float(c.strength), "score": _finite(c.score), "reason": c.reason,
                         "mode": c.mode or ""}
                        for c in commit.conditioned_on if c.target_kind == kind]
                if not rows:
                    continue
                if kind == "Reference":  # story-file images: nodes made on first use
                    run(self.q("references_upsert"), p({"rows": rows}))
                run(self.q(name), p({"scene": t.scene_id, "take": int(t.take), "rows": rows}))
            if commit.choose:
                self._choose(run, t.scene_id, t.take)
            return self._event(run, "take.committed", t.scene_id, {"take": t.take, "chosen": commit.choose})

    def _choose(self, run: Run, scene_id: str, take: int) -> list[Mark]:
        """Choose a take inside a transaction; when it replaces another one, what was made from that is stale."""
        p = self._params({"scene": scene_id, "take": int(take), "now": now_iso()})
        before = run(self.q("scenes_clock"), self._params({"ids": [scene_id]}))
        old = before[0]["chosen_take"] if before else None
        if not run(self.q("scene_choose_take"), p):
            raise RecordNotFound(f"scene {scene_id!r} has no take {take}")
        run(self.q("appearances_accept"), p)
        run(self.q("appears_in_observe"), p)
        if old is not None and int(old) == int(take):
            return []
        self._move_uses(run, scene_id, old, take)
        if old is None:
            return []
        return self._ripple(run, sources={scene_id: Cause(scene_id, f"take {take} chosen instead of take {old}")})

    def _move_uses(self, run: Run, scene_id: str, old: Optional[int], new: Optional[int]) -> None:
        """Keep ``Appearance.uses`` in step with the chosen take's ``CONDITIONED_ON`` edges, inside the transaction
        that changes them: the memories take ``old`` used lose the scene, those take ``new`` used gain it (with the
        identity the take kept). A copy of those edges on their targets, so that retrieval reads a memory's uses
        with the memory itself: LadybugDB finds the edges into a hundred nodes only by scanning the edge table."""
        def used(take: Optional[int]) -> list[str]:
            if take is None:
                return []
            rows = run(self.q("conditioned_on_of_scene"), self._params({"scene": scene_id, "take": int(take)}))
            return [r["target_id"] for r in rows if r["target_kind"] == "Appearance"]

        drop, add = used(old), used(new)
        ids = list(dict.fromkeys(drop + add))
        if not ids:
            return
        identities: dict = {}
        if add:
            t = [r["take"] for r in run(self.q("takes_of_scene"), self._params({"scene": scene_id}))
                 if int(r["take"]["take"]) == int(new)]
            identities = json.loads(t[0].get("identity_by_character") or "{}") if t else {}
        apps = run(self.q("appearances_by_ids_meta"), self._params({"ids": ids, "accepted_only": False}))
        rows = []
        for a in apps:
            entries = [e for e in a["uses"] or () if parse_use(e)[0] != scene_id]
            if a["id"] in add:
                entries.append(use_entry(scene_id, identities.get(a["character_id"])))
            rows.append({"id": a["id"], "uses": entries})
        if rows:
            run(self.q("appearances_uses_set"), self._params({"rows": rows}))

    def index_memory(self) -> int:
        """Build every ``Appearance.uses`` list from the ``CONDITIONED_ON`` edges of chosen takes (a story written
        before the lists existed, or a repair), in one transaction; returns how many appearances were used."""
        with self._transaction(write=True) as run:
            uses: dict[str, list[str]] = {}
            for r in run(self.q("appearances_uses_all"), self._params()):
                identity = json.loads(r["identities"] or "{}").get(r["character_id"])
                uses.setdefault(r["id"], []).append(use_entry(r["scene_id"], identity))
            run(self.q("appearances_uses_clear"), self._params())
            if uses:
                run(self.q("appearances_uses_set"), self._params({"rows": [
                    {"id": aid, "uses": sorted(entries)} for aid, entries in uses.items()]}))
            run(self.q("story_memory_indexed"), self._params({"version": MEMORY_INDEX_VERSION}))
            return len(uses)

    def memory_indexed(self) -> bool:
        """Whether this story's ``Appearance.uses`` lists are kept (stories written before them are indexed once)."""
        meta = self.story_meta() or {}
        return (meta.get("memory_index") or 0) >= MEMORY_INDEX_VERSION

    def choose_take(self, scene_id: str, take: int) -> int:
        """Make ``take`` the one that continues the timeline, in one transaction; scenes made from the take it
        replaces are marked stale."""
        with self._transaction(write=True) as run:
            self._choose(run, scene_id, take)
            return self._event(run, "take.chosen", scene_id, {"take": take})

    def takes(self, scene_id: str) -> list[TakeRecord]:
        return [take_from_props(r["take"]) for r in self._read("takes_of_scene", {"scene": scene_id})]

    def appearances(self, ids: Optional[Iterable[str]] = None, character_id: Optional[str] = None,
                    accepted_only: bool = True, with_vectors: bool = True,
                    scene_id: Optional[str] = None) -> list[Appearance]:
        flags = {"accepted_only": accepted_only}
        suffix = "" if with_vectors else "_meta"  # reading the vectors is most of the cost: skip when unused
        if scene_id is not None:
            rows = self._read("appearances_by_scene" + suffix, {"scene": scene_id, **flags})
        elif ids is not None:
            ids = list(ids)
            if not ids:
                return []
            rows = self._read("appearances_by_ids" + suffix, {"ids": ids, **flags})
        elif character_id is not None:
            rows = self._read("appearances_by_character" + suffix, {"character": character_id, **flags})
        else:
            rows = self._read("appearances_all" + suffix, flags)
        return [appearance_from_row(r) for r in rows]

    def appearance_keys(self) -> Iterator[tuple[str, str]]:
        for r in self._read("appearance_keys"):
            yield r["id"], r["character_id"]

    def appearance_arrays(self, ids: Optional[Iterable[str]] = None, spaces: Iterable[str] = ("clip", "dino"),
                          batch: int = 2000) -> Iterator[dict]:
        import numpy as np

        def columns(apps: list[Appearance]) -> dict:
            out = {"id": [a.id for a in apps], "character_id": [a.character_id for a in apps],
                   "branch": [a.branch for a in apps], "pos": np.array([a.pos for a in apps], dtype=np.int64),
                   "clock": np.array([a.clock for a in apps], dtype=np.float64)}
            for space in spaces:
                out[space] = np.asarray([getattr(a, space) for a in apps], dtype=np.float32)
            return out

        if ids is None:  # everything: one read
            apps = self.appearances(with_vectors=True)
            for s in range(0, len(apps), batch):
                yield columns(apps[s: s + batch])
            return
        ids = list(ids)
        for s in range(0, len(ids), batch):
            apps = self.appearances(ids=ids[s: s + batch], with_vectors=True)
            if apps:
                yield columns(apps)

    def scene_placements(self, ids: Iterable[str]) -> dict[str, tuple[float, str, int]]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        return {r["id"]: (float(r["clock"]), r["branch"], int(r["pos"]))
                for r in self._read("scenes_placement", {"ids": ids})}

    def conditioned_on(self, scene_id: str, take: Optional[int] = None) -> list[ConditionRecord]:
        return [ConditionRecord(r["role"], r["target_kind"], r["target_id"], int(r["frame_index"]),
                                float(r["strength"]), r["score"], r["reason"], r.get("mode") or "")
                for r in self._read("conditioned_on_of_scene", {"scene": scene_id, "take": take})]

    # -- deleting --------------------------------------------------------------------------------
    def scene_children(self, scene_id: str) -> list[str]:
        """Ids of the scenes that follow this one directly (its outgoing transitions)."""
        return [r["id"] for r in self._read("scene_children", {"id": scene_id})]

    # -- events ----------------------------------------------------------------------------------
    def _event(self, run: Run, kind: str, ref_id: str, payload: Optional[dict]) -> int:
        rows = run(self.q("event_append"), self._params({
            "kind": kind, "ref_id": ref_id, "at": now_iso(), "payload": json.dumps(payload or {})}))
        return int(rows[0]["seq"])

    def append_event(self, kind: str, ref_id: str, payload: Optional[dict] = None) -> int:
        with self._transaction(write=True) as run:
            return self._event(run, kind, ref_id, payload)

    def append_events(self, events: Sequence[tuple[str, str, Optional[dict]]]) -> int:
        """Append several (kind, ref_id, payload) events in one transaction; returns the last seq."""
        seq = 0
        with self._transaction(write=True) as run:
            for kind, ref_id, payload in events:
                seq = self._event(run, kind, ref_id, payload)
        return seq

    def events_since(self, seq: int, limit: int = 1000) -> list[Event]:
        rows = self._read("events_since", {"seq": int(seq), "limit": int(limit)})
        return [Event(int(r["seq"]), r["kind"], r["ref_id"], r["at"], r["payload"] or "{}") for r in rows]

    def last_event_seq_in(self, run: Run) -> int:
        rows = run(self.q("event_last"), self._params())
        return int(rows[0]["seq"]) if rows and rows[0]["seq"] is not None else 0

    def last_event_seq(self) -> int:
        with self._transaction(write=False) as run:
            return self.last_event_seq_in(run)

    # -- Cypher ----------------------------------------------------------------------------------
    def query(self, cypher: str, params: Optional[dict] = None, read_only: bool = True,
              timeout_s: Optional[float] = None, max_rows: Optional[int] = None) -> QueryResult:
        """Run user-written Cypher.

        ``read_only`` (the default, and the only mode the CLI, the studio and ``StoryEngine.query`` use): the
        query must pass both guards — the allow-list parse (``readonly.py``) and the backend's own — and runs
        within ``timeout_s`` seconds (default ``DEFAULT_QUERY_TIMEOUT_S``; parsing included), returning at
        most ``max_rows`` rows (default ``DEFAULT_MAX_ROWS``) with ``truncated`` set when there were more.
        """
        from .console import ConsoleLimits, check_max_rows, check_params, check_timeout

        params = check_params(params)
        if read_only:
            limits = ConsoleLimits(check_timeout(DEFAULT_QUERY_TIMEOUT_S if timeout_s is None else timeout_s),
                                   check_max_rows(DEFAULT_MAX_ROWS if max_rows is None else max_rows))
            return self._user_query(check_read_only(cypher), params, limits)
        return self._write_query(cypher, params)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
