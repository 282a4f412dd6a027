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
from typing import Callable, Iterable, Iterator, Optional, Sequence

from ..domain import (
    EMPTY_LINEAGE, SCENE_STATUSES, TRANSITION_KINDS, Appearance, Character, ConditionRecord, Environment, Event,
    GenerationDefaults, Lineage, MemoryParams, Placement, Reference, SceneSpec, Scores, Story, generation_settings,
)
from ..faults import crash_point
from ..timeline import place_scenes, transition_decay
from . import queries
from .readonly import check_read_only
from .store import (
    LoadSummary, QueryResult, RecordNotFound, SceneCommit, SceneContext, SceneRecord, StoreConflict, StoreInputError,
    TakeRecord, TransitionRecord,
)

Run = Callable[[str, Optional[dict]], list]

#: Rows per execution of an ``UNWIND $rows`` write (see ``CypherStore._batched``).
UNWIND_BATCH = 1000

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
        takes=int(d.get("takes") or 0), notes=d.get("notes") or "",
    )


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
        accepted=bool(d["accepted"]),
    )


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
        placements = place_scenes([s.id for s in story.scenes], list(story.transitions))
        before = self._counts()
        with self._transaction(write=True) as run:
            p = self._params
            run(self.q("story_upsert"), p({
                "title": story.title, "source_path": story.source_path,
                "defaults": json.dumps(asdict(story.defaults)), "now": now_iso()}))
            self._write_structure(run, story.characters, story.environments,
                                  [(s.resolved(story.defaults), placements[s.id]) for s in story.scenes],
                                  story.transitions)
        after = self._counts()
        created = {k: after[k] - before.get(k, 0) for k in after}
        if any(created.values()):  # followers (viewers) rebuild on it; an unchanged reload writes nothing
            self.append_event("story.loaded", story.id, created)
        return LoadSummary(len(story.characters), len(story.environments), len(story.scenes),
                           len(story.transitions), created)

    def _write_structure(self, run: Run, characters, environments, scenes, transitions) -> None:
        each = self._batched(run)
        if characters:
            self._upsert(run, "character", "characters", [
                {"id": c.id, "name": c.name, "description": c.description, "reference_path": c.reference_path,
                 "decay_tau": _finite(c.decay_tau)} for c in characters])
        if environments:
            self._upsert(run, "environment", "environments", [
                {"id": e.id, "name": e.name, "description": e.description, "reference_path": e.reference_path}
                for e in environments])
        if scenes:
            ids = [spec.id for spec, _ in scenes]
            self._upsert(run, "scene", "scenes", [_scene_row(s, pl) for s, pl in scenes])
            for name in ("scene_story_link", "scene_environment_clear", "scene_environment_link", "appears_in_prune"):
                each(name, "ids", ids)
            each("appears_in_plan", "rows", ({"scene": s.id, "character": c} for s, _ in scenes for c in s.characters),
                 strength=float(self.memory.strength_init))
        if transitions:
            each("transitions_upsert", "rows", (
                {"from_id": t.from_id, "to_id": t.to_id, "kind": t.kind, "gap": float(t.effective_gap),
                 "decay": transition_decay(t.effective_gap, self.memory.tau_story)} for t in transitions))

    def _upsert(self, run: Run, kind: str, plural: str, rows: list[dict]) -> None:
        """Create the rows the story lacks and update the others (``<plural>_create``, ``<plural>_upsert``).

        Not MERGE: LadybugDB's MERGE grows slower with the table (a load of n scenes cost O(n^2)), and a node
        created whole costs half the time and memory of one created bare and then set. Reading the story's
        ids is one scan."""
        have = {r["id"] for r in run(self.q(f"{kind}_ids"), self._params())}
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

    def _counts(self) -> dict:
        out = {}
        with self._transaction(write=False) as run:
            for label in ("Story", "Character", "Environment", "Scene", "Appearance", "Take", "Event"):
                out[label] = self._count_label(run, label)
        return out

    def _count_label(self, run: Run, label: str) -> int:
        return int(run(self.q(f"count_{label.lower()}"), {"story": self.story_id})[0]["n"])

    def upsert_character(self, character: Character) -> None:
        with self._transaction(write=True) as run:
            self._write_structure(run, [character], [], [], [])

    def upsert_environment(self, environment: Environment) -> None:
        with self._transaction(write=True) as run:
            self._write_structure(run, [], [environment], [], [])

    def defaults(self) -> GenerationDefaults:
        meta = self.story_meta()
        return GenerationDefaults(**json.loads(meta["defaults"])) if meta and meta.get("defaults") else GenerationDefaults()

    def upsert_scene(self, spec: SceneSpec, placement: Placement) -> None:
        spec = spec.resolved(self.defaults())
        with self._transaction(write=True) as run:
            self._write_structure(run, [], [], [(spec, placement)], [])

    def upsert_transition(self, transition: TransitionRecord) -> None:
        if transition.kind not in TRANSITION_KINDS:
            raise StoreInputError(f"unknown transition kind {transition.kind!r}")
        with self._transaction(write=True) as run:
            run(self.q("transitions_upsert"), self._params({"rows": [{
                "from_id": transition.from_id, "to_id": transition.to_id, "kind": transition.kind,
                "gap": float(transition.gap), "decay": float(transition.decay)}]}))

    def ids(self, kind: str) -> list[str]:
        """The ids of the story's characters, environments or scenes (``kind``: character | environment | scene)."""
        if kind not in ("character", "environment", "scene"):
            raise StoreInputError(f"no ids of kind {kind!r}")
        return [r["id"] for r in self._read(f"{kind}_ids")]

    def characters(self) -> list[Character]:
        return [Character(r["id"], r["name"], r["description"] or "", r["reference_path"], r["decay_tau"])
                for r in self._read("characters_all")]

    def environments(self) -> list[Environment]:
        return [Environment(r["id"], r["description"] or "", r["name"] or "", r["reference_path"])
                for r in self._read("environments_all")]

    def transitions(self) -> list[TransitionRecord]:
        return [TransitionRecord(r["from_id"], r["to_id"], r["kind"], r["gap"], r["decay"])
                for r in self._read("transitions_all")]

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
                    "clip": [float(x) for x in a.clip], "dino": [float(x) for x in a.dino],
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
            if commit.reinforcements:
                run(self.q("appearances_reinforce"), p({"rows": [
                    {"id": i, "strength": float(st), "clock": float(ck)} for i, st, ck in commit.reinforcements]}))
            if commit.choose:
                self._choose(run, t.scene_id, t.take)
            return self._event(run, "take.committed", t.scene_id, {"take": t.take, "chosen": commit.choose})

    def _choose(self, run: Run, scene_id: str, take: int) -> None:
        p = self._params({"scene": scene_id, "take": int(take), "now": now_iso()})
        if not run(self.q("scene_choose_take"), p):
            raise RecordNotFound(f"scene {scene_id!r} has no take {take}")
        run(self.q("appearances_accept"), p)
        run(self.q("appears_in_observe"), p)

    def choose_take(self, scene_id: str, take: int, reinforcements: Sequence[tuple[str, float, float]] = ()) -> int:
        """Make ``take`` the one that continues the timeline (and apply the reinforcement of the memories it
        used, when the engine passes it), in one transaction."""
        with self._transaction(write=True) as run:
            self._choose(run, scene_id, take)
            if reinforcements:
                run(self.q("appearances_reinforce"), self._params({"rows": [
                    {"id": i, "strength": float(st), "clock": float(ck)} for i, st, ck in reinforcements]}))
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

    def conditioned_on(self, scene_id: str, take: Optional[int] = None) -> list[ConditionRecord]:
        return [ConditionRecord(r["role"], r["target_kind"], r["target_id"], int(r["frame_index"]),
                                float(r["strength"]), r["score"], r["reason"], r.get("mode") or "")
                for r in self._read("conditioned_on_of_scene", {"scene": scene_id, "take": take})]

    # -- deleting --------------------------------------------------------------------------------
    def scene_children(self, scene_id: str) -> list[str]:
        """Ids of the scenes that follow this one directly (its outgoing transitions)."""
        return [r["id"] for r in self._read("scene_children", {"id": scene_id})]

    def scene_dependents(self, scene_id: str) -> list[str]:
        """Ids of the other scenes whose takes were made from this scene: conditioned on it (an extension, a look)
        or on one of its remembered appearances."""
        with self._transaction(write=False) as run:
            ids = {r["id"] for r in run(self.q("scene_dependents"), self._params({"id": scene_id}))}
            ids |= {r["id"] for r in run(self.q("scene_memory_users"), self._params({"id": scene_id}))}
        return sorted(ids)

    def delete_scene(self, scene_id: str, placements: Sequence[tuple[SceneSpec, Placement]] = ()) -> list[str]:
        """Remove a scene with its takes, appearances and every edge touching them, and write the new placements of
        the scenes it cut loose, in one transaction; returns the ids of the appearances removed (for the vector
        index). The caller checks that nothing made depends on the scene."""
        rows = self._placement_rows(placements)
        with self._transaction(write=True) as run:
            p = self._params({"id": scene_id})
            if not run(self.q("scene_get"), p):
                raise RecordNotFound(f"no scene {scene_id!r}")
            removed = [r["id"] for r in run(self.q("scene_delete_appearances"), p)]
            run(self.q("scene_delete_takes"), p)
            run(self.q("scene_delete"), p)
            if rows:
                run(self.q("scenes_upsert"), self._params({"rows": rows, "now": now_iso()}))
            self._event(run, "scene.deleted", scene_id, {"appearances": len(removed)})
        return removed

    def delete_transition(self, from_id: str, to_id: str, placements: Sequence[tuple[SceneSpec, Placement]] = ()
                          ) -> int:
        """Remove the transition ``from_id -> to_id`` and write the new placements of the scenes it cut loose, in
        one transaction; returns the Event seq."""
        rows = self._placement_rows(placements)
        with self._transaction(write=True) as run:
            if not any(t["to_id"] == to_id and t["from_id"] == from_id for t in run(
                    self.q("transitions_all"), self._params())):
                raise RecordNotFound(f"no transition {from_id!r} -> {to_id!r}")
            run(self.q("transition_delete"), self._params({"from_id": from_id, "to_id": to_id}))
            if rows:
                run(self.q("scenes_upsert"), self._params({"rows": rows, "now": now_iso()}))
            return self._event(run, "transition.deleted", to_id, {"from": from_id})

    def _placement_rows(self, placements: Sequence[tuple[SceneSpec, Placement]]) -> list[dict]:
        if not placements:
            return []
        defaults = self.defaults()
        return [_scene_row(spec.resolved(defaults), pl) for spec, pl in placements]

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
