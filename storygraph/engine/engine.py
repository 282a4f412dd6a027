"""StoryEngine: plan → retrieve → condition → generate → observe → commit, one scene at a time.

The graph is the source of truth. A scene goes planned → generating → done | failed; each take is
committed in one transaction (take, appearances with embeddings, provenance, APPEARS_IN updates, an Event), and
only then is the vector index updated, so a crash at any point leaves a story that ``resume`` finishes: committed
takes are never made twice, the index is reconciled with the graph on open, and a scene whose process died is
``interrupted`` and made again.

Edits ripple (see :mod:`storygraph.ripple`): changing a scene, its place on a timeline, a character or place it
shows, or the take chosen upstream makes the generated scenes made from it ``stale``; they keep their media until
``run`` makes them again, parents first. New takes compete with the chosen one: the choice only changes when a new
take beats it on ``best_take_by`` (or when the user chooses). Media paths are stored relative to the story folder.

The engine is put together from parts with one job each: the store (the graph), a :class:`ModelRegistry`
(models loaded on first use), an :class:`IndexKeeper` (the vector indexes), a :class:`TakeBook` (seeds, request
keys, take numbers, the best take), a :class:`GenerationLock` (one generation per story) and a
:class:`MediaWriter` (takes' files written in the background). ``StoryEngine.open(folder)`` does the folder work
(folders, ``storygraph.toml``, the store) and builds them.

Keeping the GPU busy: a take's media are written while the engine goes on, and its scene is committed once they
are on disk — during the next scene's generation when a run goes through a story (see :mod:`.writer`). The
scene waiting for its files is *in flight*: the next scene extends from its frames in memory and retrieves as if
it were committed. Per-scene timings (every stage, the generator's own, media writing) go to ``on_timings``
listeners.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .. import mediapaths
from ..config import Config
from ..domain import Character, Environment, SceneSpec, Story, Transition
from ..faults import crash_point
from ..graphdb import SceneCommit, SceneContext, SceneRecord, StoryStore, TakeRecord, TransitionRecord, open_store
from ..ripple import Cause, subtree
from ..timeline import child_placement, place_scenes, timeline_order, transition_decay
from .checks import EditChecks
from .errors import (
    EngineError, GenerationBusy, IndexNotSaved, InvalidRequest, NotReady, SceneExists, SceneHasChildren,
    SceneNotFound,
)
from .indexes import IndexKeeper
from .locks import GenerationLock
from .models import ModelRegistry
from .prompts import build_prompt, retrieval_text
from .references import reference_root
from .runs import Cancelled, Progress, ProgressState, RunControl, Selection, scenes_to_run
from .takes import TakeBook, TakeOutcome
from .writer import InFlight, MediaWriter, PendingView

__all__ = ["StoryEngine", "STAGES", "SceneWork", "RunOutcome", "EngineError", "SceneNotFound", "SceneExists",
           "NotReady", "GenerationBusy", "InvalidRequest", "IndexNotSaved", "SceneHasChildren", "Cancelled",
           "RunControl", "Selection"]

STAGES = ("plan", "retrieve", "condition", "generate", "observe", "commit")
ProgressFn = Callable[[str, str, dict], None]  # (scene id, stage, info)


@dataclass
class SceneWork:
    """What the stages of one scene hand each other."""

    ctx: SceneContext
    prompt: str = ""
    memories: dict = field(default_factory=dict)  # character id -> ranked prior appearances (Candidates)
    references: dict = field(default_factory=dict)  # character id -> DINOv2 embedding of its reference image
    parent_frames: Optional[list] = None  # the parent take's last frames, oldest first
    plan: Any = None  # the ConditioningPlan
    reference: Any = None  # the composed reference sheet (a ReferenceInput) in reference mode
    made: list = field(default_factory=list)  # take numbers this run started making (their media may be on disk)
    notes: list = field(default_factory=list)  # what could not be used (a memory whose frame is gone), in words
    jobs: list = field(default_factory=list)  # MediaJob per take this run made (their files are being written)
    timings: dict = field(default_factory=dict)  # seconds per stage of this scene

    @property
    def scene(self) -> SceneRecord:
        return self.ctx.scene


@dataclass
class RunOutcome:
    """What a run did: the scenes it planned to make, made, and skipped (their parent is not done)."""

    selection: Selection
    planned: list = field(default_factory=list)
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


class StoryEngine:
    """The loop users run. Open one with :meth:`open` on a story folder (embedded graph) or a Neo4j URI."""

    def __init__(self, story_dir, store: StoryStore, config: Config, *, models: Optional[ModelRegistry] = None,
                 index: Optional[IndexKeeper] = None, lock: Optional[GenerationLock] = None,
                 takes: Optional[TakeBook] = None):
        self.dir = Path(story_dir)
        self.store = store
        self.config = config
        self.models = models or ModelRegistry(config, self.dir, self._reference_root)
        self.index = index or IndexKeeper(self.dir / "vectors", store, config.models.device,
                                          config.engine.index_save_every)
        self.lock = lock or GenerationLock(self.dir)
        self.takes = takes or TakeBook(store, config.engine, config.memory,
                                       media_ok=lambda path: mediapaths.exists(self.dir, path))
        self.checks = EditChecks(store, self.dir, config)
        self.last_load = None  # the LoadSummary of the last load(): what changed, what is stale now
        self.writer = MediaWriter(config.engine.media_writer)
        self._pending = PendingView(store)  # the store as retrieval reads it, the scene in flight included
        self._inflight: Optional[InFlight] = None
        self._recent_frames: Optional[tuple] = None  # ((scene id, take), last frames) of the last committed scene
        self._retriever = None
        self._held: list = []  # stage events not yet written
        self._listeners: list[Callable] = []
        self._timing_listeners: list[Callable] = []
        self._slot: Optional[tuple] = None  # (scene id, start) of the scene the loop is on, for its wall time
        self._loaded_before = 0.0

    # -- opening and closing ---------------------------------------------------------------------
    @classmethod
    def open(cls, dir_or_uri, *, story_dir=None, graph: Optional[str] = None, config: Optional[Config] = None,
             story: Optional[str] = None, database: Optional[str] = None, generator=None,
             encoders=None) -> "StoryEngine":
        """Open a story.

        ``dir_or_uri``: the story folder (media, vector index, ``storygraph.toml`` and, by default, the embedded
        graph), created if missing; or a ``neo4j://`` URI, with the folder in ``story_dir`` (default ``.``).
        ``graph``: a Neo4j URI for a story folder whose graph lives in Neo4j. ``config``: instead of the
        folder's ``storygraph.toml``. ``story``: the story id when the graph holds several. ``generator`` /
        ``encoders``: built models to use instead of loading the configured ones.
        """
        from ..graphdb.neo4j import is_neo4j_uri

        if is_neo4j_uri(str(dir_or_uri)):
            graph, folder = str(dir_or_uri), story_dir or "."
        else:
            folder = dir_or_uri
        folder = Path(folder).resolve()
        if folder.exists() and not folder.is_dir():
            raise InvalidRequest(f"{folder} is not a folder: a story folder holds the graph, media and storygraph.toml")
        folder.mkdir(parents=True, exist_ok=True)  # media/ comes with the first take: opening writes no media
        config = config or Config.load(folder)
        store = open_store(graph or folder, story, database=database, memory=config.memory)
        models = ModelRegistry(config, folder, lambda: reference_root(store, folder), generator=generator,
                               encoders=encoders)
        engine = cls(folder, store, config, models=models)
        try:
            engine._recover()
        except BaseException:
            engine.close()
            raise
        return engine

    def _recover(self) -> None:
        """After a crash, a move or an upgrade: media paths relative to this folder, each memory's uses indexed,
        and (where no other process can be generating) scenes left ``generating`` marked ``interrupted``. An
        embedded store did the latter on open."""
        from ..graphdb.store import StoreInputError

        try:
            if self.store.story_id is None and not self.store.stories():
                return
            self.store.migrate_media_paths(self.dir)
            if not self.store.memory_indexed():  # written before memories kept their uses
                self.store.index_memory()
        except StoreInputError:  # several stories and none named: the first operation says so
            return
        if self.store.multi_story and self.lock.idle():
            self.store.mark_interrupted()

    def close(self) -> None:
        """Save the vector index, close the graph, release the story. The graph and the lock are let go even when
        the save fails (a full disk): the index is derived, and the next open rebuilds what it lacks; the
        failure is raised after, as an ``IndexNotSaved``."""
        try:
            try:
                self._settle()  # nothing in flight outside run_selection() and generate(), which settle first
            finally:
                self.writer.close()
            self.index.save()
        except OSError as e:
            failed: Optional[OSError] = e
        else:
            failed = None
        finally:
            try:
                self.store.close()
            finally:
                self.lock.release()
        if failed is not None:
            raise IndexNotSaved(f"the vector index was not saved ({failed.strerror or failed}); the graph is intact "
                                "and the next open rebuilds the index from it") from failed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- building the story ----------------------------------------------------------------------
    # Every edit is checked against the story rules (storygraph.rules, through .checks) before anything is
    # written: a refused edit raises a RuleError (InvalidInput) naming the field and leaves the graph as it was.
    def load(self, story_or_path) -> Story:
        from ..storyfile import load_story

        if isinstance(story_or_path, Story):
            story = story_or_path
            self.checks.story(story)
        else:
            story = load_story(story_or_path, reference_folders=self.config.story.reference_roots(self.dir))
        with self.index.moving() as moving:  # a changed transition may move scenes (appearances carry placements)
            self.last_load = self.store.load_story(story)
            moving["moved"] = bool(self.last_load.changes.get("placed"))
        return story

    def add_character(self, character: Character) -> dict:
        """Add or change a character; returns ``{scene id: reason}`` of the scenes the change made stale."""
        self.checks.character(character)
        marks = self.store.upsert_character(character)
        self.store.append_event("character.updated", character.id, {"stale": len(marks)})
        return marks

    def add_environment(self, environment: Environment) -> dict:
        self.checks.environment(environment)
        marks = self.store.upsert_environment(environment)
        self.store.append_event("environment.updated", environment.id, {"stale": len(marks)})
        return marks

    def add_scene(self, spec: SceneSpec, parent_id: Optional[str] = None, kind: str = "cut",
                  gap: Optional[float] = None) -> SceneRecord:
        """Add a scene, optionally after ``parent_id``: a parent that already has a child gets a new branch."""
        if self.store.scene(spec.id) is not None:
            raise SceneExists(f"scene {spec.id!r} already exists; use update_scene")
        parent = self.checks.new_scene(spec, parent_id, kind, gap)
        if parent is None:
            placement = place_scenes([spec.id], [])[spec.id]
            self.store.upsert_scene(spec, placement)
        else:
            t = Transition(parent_id, spec.id, kind, gap)
            has_child = any(x.from_id == parent_id for x in self.store.transitions())
            placement = child_placement(parent.placement, spec.id, t.effective_gap, continues_branch=not has_child)
            self.store.upsert_scene(spec, placement)
            self.store.upsert_transition(self._transition_record(t))
        self.store.append_event("scene.added", spec.id)
        return self.store.scene(spec.id)

    def update_scene(self, scene_id: str, **fields) -> SceneRecord:
        """Change a scene's spec (action, characters, lighting…). A generated scene becomes stale (it keeps its
        media until made again) with every scene made from it; one not generated yet stays planned."""
        scene = self.store.scene(scene_id)
        if scene is None:
            raise SceneNotFound(f"no scene {scene_id!r}")
        spec = self.checks.scene_edit(scene, fields)
        self.store.update_scene(spec)
        return self.store.scene(scene_id)

    def add_transition(self, transition: Transition) -> dict:
        """Join two scenes. A scene has one incoming transition: one from another parent replaces it in the same
        transaction, placements (clock, branch) are recomputed from the whole story, and the moved subtree is
        stale. Returns ``{scene id: reason}`` of the scenes marked stale."""
        # unknown scenes, loops, a second parent: refused by field; else every scene's placement with it
        placements = self.checks.transition(transition)
        before = next((t for t in self.store.transitions() if t.to_id == transition.to_id), None)
        record = self._transition_record(transition)
        changed, moved = {}, None
        if before is None or before.from_id != transition.from_id:
            moved = (transition.to_id, f"moved: now follows {transition.from_id}")
        else:
            what = [n for n, a, b in (("kind", before.kind, record.kind), ("gap", float(before.gap), record.gap))
                    if a != b]
            if what:
                changed[transition.to_id] = Cause(transition.to_id,
                                                  f"transition from {transition.from_id} changed: {', '.join(what)}")
        marks = self._retime(placements, changed, moved=moved, upsert=[record])
        self.store.append_event("transition.added", transition.to_id, {"from": transition.from_id, "stale": len(marks)})
        return marks

    def delete_transition(self, from_id: str, to_id: str) -> dict:
        """Remove a transition: ``to_id`` starts a timeline of its own, and it and the scenes after it are stale."""
        old = [Transition(t.from_id, t.to_id, t.kind, t.gap) for t in self.store.transitions()]
        if not any(t.from_id == from_id and t.to_id == to_id for t in old):
            raise SceneNotFound(f"no transition from {from_id!r} to {to_id!r}")
        transitions = [t for t in old if not (t.from_id == from_id and t.to_id == to_id)]
        placements = place_scenes(self.store.ids("scene"), transitions)
        marks = self._retime(placements, {}, moved=(to_id, f"moved: detached from {from_id}"),
                             delete=[(from_id, to_id)])
        self.store.append_event("transition.deleted", to_id, {"from": from_id, "stale": len(marks)})
        return marks

    def _retime(self, placements: dict, changed: dict, moved=None, upsert=(), delete=()) -> dict:
        """Write a new set of transitions (``placements``: every scene's, with them), ``moved = (scene, why)`` and
        its subtree stale."""
        scenes = self.store.scenes()
        if moved is not None:
            root, text = moved
            for sid in subtree(placements, root):
                changed.setdefault(sid, Cause(root, text))
        new = {s.id: placements[s.id] for s in scenes if not placements[s.id].same_place(s.placement)}
        with self.index.moving() as moving:
            moving["moved"] = bool(new)
            return self.store.set_timeline(upsert=list(upsert), delete=list(delete), placements=new,
                                           changed=changed)

    def delete_scene(self, scene_id: str, cascade: bool = False) -> list[str]:
        """Delete a scene with its takes, appearances and media. A scene with generated scenes after it is refused
        unless ``cascade`` (then they go too); scenes not generated yet that followed it start timelines of their
        own. Returns the ids deleted."""
        scenes = {s.id: s for s in self.store.scenes()}
        if scene_id not in scenes:
            raise SceneNotFound(f"no scene {scene_id!r}")
        with self.lock.held():
            transitions = [Transition(t.from_id, t.to_id, t.kind, t.gap) for t in self.store.transitions()]
            after = subtree({s.id: s.placement for s in scenes.values()}, scene_id)[1:]
            generated = [sid for sid in after if scenes[sid].chosen_take is not None]
            if generated and not cascade:
                raise SceneHasChildren(
                    f"scene {scene_id!r} has generated scenes after it ({', '.join(generated[:5])}"
                    f"{', …' if len(generated) > 5 else ''}): delete them too with cascade (--cascade), or move "
                    "them first")
            ids = [scene_id] + (after if cascade else [])
            gone = set(ids)
            rest = [t for t in transitions if t.from_id not in gone and t.to_id not in gone]
            placements = place_scenes([s for s in scenes if s not in gone], rest)
            new = {sid: pl for sid, pl in placements.items() if not pl.same_place(scenes[sid].placement)}
            apps = [a.id for sid in ids for a in self.store.appearances(scene_id=sid, accepted_only=False,
                                                                        with_vectors=False)]
            with self.index.moving() as moving:
                moving["moved"] = bool(new)
                self.store.delete_scenes(ids, new)
            self.index.remove(apps)
            import shutil

            for sid in ids:
                shutil.rmtree(self.dir / "media" / sid, ignore_errors=True)
        return ids

    def _transition_record(self, t: Transition) -> TransitionRecord:
        gap = t.effective_gap
        return TransitionRecord(t.from_id, t.to_id, t.kind, gap, transition_decay(gap, self.config.memory.tau_story))

    # -- reference images ------------------------------------------------------------------------------
    def add_reference_image(self, data: bytes) -> str:
        """Keep an uploaded image in the story folder (checked and written as PNG); returns its path."""
        from .references import save_reference_image

        return str(save_reference_image(self.dir, data))

    def set_character_reference(self, character_id: str, path: Optional[str]) -> None:
        """Give a character a reference image (or none): its identity anchor for retrieval and scoring."""
        found = [c for c in self.store.characters() if c.id == character_id]
        if not found:
            raise SceneNotFound(f"no character {character_id!r}")
        self.add_character(replace(found[0], reference_path=self._checked_reference(path)))

    def set_environment_reference(self, environment_id: str, path: Optional[str]) -> None:
        """Give a place a reference image (or none)."""
        found = [e for e in self.store.environments() if e.id == environment_id]
        if not found:
            raise SceneNotFound(f"no environment {environment_id!r}")
        self.add_environment(replace(found[0], reference_path=self._checked_reference(path)))

    def set_scene_reference(self, scene_id: str, kind: str, path: Optional[str], character: Optional[str] = None,
                            strength: float = 1.0, frame_index: int = 0) -> SceneRecord:
        """Condition a scene on an image: a ``character``, ``costume`` or ``place`` reference (``character`` names
        whose, for the first two). It replaces the scene's reference of the same kind and character; ``path`` None
        removes it. The scene goes back to planned."""
        from ..domain import Reference
        from .references import SCENE_KINDS

        scene = self.store.scene(scene_id)
        if scene is None:
            raise SceneNotFound(f"no scene {scene_id!r}")
        if kind not in SCENE_KINDS:
            raise InvalidRequest(f"reference kind {kind!r}: expected one of {', '.join(SCENE_KINDS)}")
        who = character if kind in ("character", "costume") else None
        if kind in ("character", "costume") and who not in scene.spec.characters:
            raise InvalidRequest(f"a {kind} reference names one of the scene's characters "
                                 f"({', '.join(scene.spec.characters) or 'it has none'})")
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidRequest("strength: expected a number from 0 to 1")
        refs = [r for r in scene.spec.references if not (r.kind == kind and r.character == who)]
        if path is not None:
            refs.append(Reference(self._checked_reference(path), kind, who, int(frame_index), float(strength)))
        return self.update_scene(scene_id, references=tuple(refs))

    def _checked_reference(self, path: Optional[str]) -> Optional[str]:
        if path is None:
            return None
        from .references import is_uploaded

        p = Path(path)
        if not is_uploaded(self.dir, str(p)) or not p.is_file():
            raise InvalidRequest("a reference attached here must be an image added to this story "
                                 "(add_reference_image / the studio's upload)")
        return str(p.resolve())

    # -- queries and events ----------------------------------------------------------------------
    def query(self, cypher: str, params: Optional[dict] = None, timeout_s: Optional[float] = 30.0,
              max_rows: Optional[int] = None):
        """A read-only Cypher query over the story (see ``StoryStore.query``): refused unless it only reads."""
        return self.store.query(cypher, params, read_only=True, timeout_s=timeout_s, max_rows=max_rows)

    def events(self, since: int = 0, follow: bool = False, poll_s: float = 0.2) -> Iterator:
        """Events after ``since``; with ``follow`` keeps waiting for new ones."""
        seq = since
        while True:
            batch = self.store.events_since(seq)
            for e in batch:
                seq = e.seq
                yield e
            if not follow:
                return
            if not batch:
                time.sleep(poll_s)

    def on_event(self, fn: Callable) -> None:
        """Call ``fn(kind, scene_id, info)`` at every stage of every scene this engine generates."""
        self._listeners.append(fn)

    def on_timings(self, fn: Callable) -> None:
        """Call ``fn(record)`` once per committed scene with where its time went (a dict: ``scene``, ``wall_s``,
        seconds per stage under ``stages``, the generator's own under ``generator``, ``peak_gib``, ``attempts``).

        ``wall_s`` is the scene's slot on the critical path: from its start to the next scene's start (the last
        scene: to its commit), so the slots of a run add up to its time; ``media_write_s`` ran in the background
        and only ``media_wait_s`` of it held the loop up."""
        self._timing_listeners.append(fn)

    # -- parts, as the engine's users reach them --------------------------------------------------
    @property
    def device(self) -> str:
        return self.models.device

    @property
    def encoders(self):
        return self.models.encoders

    @property
    def generator(self):
        return self.models.generator

    @property
    def observer(self):
        return self.models.observer

    def indexes(self) -> dict:
        """The CLIP and DINOv2 vector indexes, reconciled with the graph on first use."""
        return self.index.indexes()

    def save_index(self) -> None:
        """Write the vector indexes to ``<story dir>/vectors`` now."""
        self.index.save()

    @property
    def retriever(self):
        if self._retriever is None:
            from .retrieval import Retriever

            idx = self.indexes()
            self._retriever = Retriever(self._pending, idx["clip"], idx["dino"], self.config.memory)
        return self._retriever

    def _reference_root(self) -> str:
        return reference_root(self.store, self.dir)

    # -- generation ------------------------------------------------------------------------------
    def run(self, until: Optional[str] = None, takes: Optional[int] = None,
            progress: Optional[ProgressFn] = None, *, selection: Optional[Selection] = None,
            control: Optional[RunControl] = None,
            on_progress: Optional[Callable[[ProgressState], None]] = None, keep_stale: bool = False) -> list[str]:
        """Generate every scene that needs it — planned, stale, failed, interrupted — in timeline order (parents
        first; stopping after ``until``); returns their ids.

        A done scene whose chosen video went missing is stale first. ``keep_stale`` leaves stale scenes as they are
        (their media stands in for them as parents). ``selection``: what to generate instead (a timeline, the
        stale scenes, one scene; see :mod:`.runs`). ``control``: a :class:`RunControl` whose ``cancel()`` stops
        the run between two denoising steps, leaving the scene it was making as it was before (:class:`Cancelled`
        is raised). ``progress(scene id, stage, info)``: called at every stage; ``on_progress(state)``: called at
        every stage and denoising step with the run's :class:`ProgressState` (step counts and an estimate of the
        time left). A scene whose parent is not done (it failed, or is stale and kept) is skipped; a killed run
        resumes here.
        """
        selection = selection or Selection("all", until=until, keep_stale=keep_stale)
        return self.run_selection(selection, takes=takes, progress=progress, control=control,
                                  on_progress=on_progress).done

    def run_plan(self, selection: Selection) -> list[SceneRecord]:
        """The scenes ``selection`` would generate now, in the order it would."""
        return scenes_to_run(self.store.scenes(), selection)

    def run_selection(self, selection: Selection, takes: Optional[int] = None,
                      progress: Optional[ProgressFn] = None, control: Optional[RunControl] = None,
                      on_progress: Optional[Callable[[ProgressState], None]] = None) -> "RunOutcome":
        """Generate what ``selection`` names (see :meth:`run`); returns the scenes done and skipped."""
        control = control or RunControl()
        outcome = RunOutcome(selection)
        with self.lock.held():
            self.indexes()  # reconciled with the graph (and saved on close) even when nothing is left to make
            if selection.kind != "scene":  # one scene is made as asked, like generate()
                self.mark_missing_media()
            plan = self.run_plan(selection)
            per_scene = (lambda s: takes or (self.config.engine.takes if selection.kind != "scene" else 1))
            tracker = Progress(plan, per_scene, on_progress)
            outcome.planned = [s.id for s in plan]
            keep_stale = selection.keep_stale or selection.kind == "scene"

            def stage(scene_id: str, st: str, info: dict) -> None:
                tracker.stage(scene_id, st, info)
                if progress is not None:
                    progress(scene_id, st, info)

            made = set()
            try:
                for planned in plan:
                    control.check()
                    scene = self.store.scene(planned.id)  # read again: what this run made may have changed it
                    if scene is None or (scene.status == "generating" and not self._in_flight(scene.id)):
                        outcome.skipped.append(planned.id)  # deleted, or another worker is on it
                        tracker.scene_skipped(planned.id)
                        continue
                    parent_id = scene.placement.parent_id
                    if selection.kind != "scene" and parent_id is not None and parent_id not in made:
                        parent = self.store.scene(parent_id)
                        if parent is None or not self._usable_parent(parent, keep_stale):
                            outcome.skipped.append(scene.id)
                            tracker.scene_skipped(scene.id)
                            continue
                    self._run_scene(scene.id, per_scene(scene), stage, control=control, tracker=tracker,
                                    keep_stale=keep_stale)
                    made.add(scene.id)
                    outcome.done.append(scene.id)
                    tracker.scene_finished(scene.id)
                    if scene.id == selection.until:
                        break
            finally:
                self._settle()  # the last scene is committed before the run returns (or raises)
        return outcome

    def generate(self, scene_id: str, takes: int = 1, progress: Optional[ProgressFn] = None,
                 control: Optional[RunControl] = None) -> list[TakeRecord]:
        """Generate ``takes`` more takes of one scene. They compete with the chosen take (unless the scene is stale
        or its media is gone): the choice changes only when one of them beats it on ``best_take_by``."""
        with self.lock.held():
            try:
                return self._run_scene(scene_id, takes, progress, control=control, keep_stale=True)
            finally:
                self._settle()

    def compare(self, modes, scene_ids=None, progress: Optional[ProgressFn] = None):
        """Generate done scenes again under each memory mode in ``modes``, as sibling takes that never replace the
        chosen one, and score them: see :mod:`storygraph.engine.compare`."""
        from .compare import compare_modes

        with self.lock.held():
            return compare_modes(self, modes, scene_ids, progress)

    def choose_take(self, scene_id: str, take: int) -> None:
        """Make ``take`` the one that continues the timeline; scenes made from the one it replaces become stale."""
        with self.lock.held():
            if take not in {t.take for t in self.store.takes(scene_id)}:
                if self.store.scene(scene_id) is None:
                    raise SceneNotFound(f"no scene {scene_id!r}")
                raise SceneNotFound(f"scene {scene_id!r} has no take {take}")
            self.store.choose_take(scene_id, take)
            self.index.update_scene(scene_id)

    def scene_work(self, scene_id: str) -> SceneWork:
        """A scene's context from the graph, ready for the stages."""
        return SceneWork(self.store.scene_context(scene_id))

    def stale_scenes(self, after: Optional[str] = None) -> list[str]:
        """Ids of the stale scenes in timeline order; with ``after``, only that scene and the ones after it."""
        scenes = self.store.scenes()
        placements = {s.id: s.placement for s in scenes}
        if after is not None and after not in placements:
            raise SceneNotFound(f"no scene {after!r}")
        within = set(subtree(placements, after)) if after is not None else set(placements)
        stale = {s.id for s in scenes if s.status == "stale" and s.id in within}
        return [sid for sid in timeline_order(placements) if sid in stale]

    def mark_missing_media(self) -> dict:
        """Done scenes whose chosen video is gone become stale ("media missing"), with what was made from them;
        returns ``{scene id: reason}`` of the scenes marked."""
        changed = {s.id: Cause(s.id, f"media missing: {s.video_path}") for s in self.store.scenes(status="done")
                   if s.chosen_take is not None and not mediapaths.exists(self.dir, s.video_path)}
        return self.store.mark_stale(changed) if changed else {}

    def _usable_parent(self, parent: SceneRecord, allow_stale: bool) -> bool:
        """A parent a scene can be made after: done (or stale, when allowed) with its media there, or the scene in
        flight (its frames are in memory and its files on their way)."""
        if self._in_flight(parent.id):
            return True
        if parent.status != "done" and not (allow_stale and parent.status == "stale"):
            return False
        return mediapaths.exists(self.dir, parent.video_path)

    def _run_scene(self, scene_id: str, takes: int, progress: Optional[ProgressFn],
                   control: Optional[RunControl] = None, tracker: Optional[Progress] = None,
                   keep_stale: bool = False) -> list[TakeRecord]:
        if takes < 1:
            raise InvalidRequest("takes must be at least 1")
        if self._in_flight(scene_id):
            self._settle()  # the same scene again: its takes so far are committed first
        ctx = self.store.scene_context(scene_id)
        if ctx.parent is not None and not self._usable_parent(ctx.parent, keep_stale):
            why = "whose media is missing" if ctx.parent.status in ("done", "stale") else "which is not generated yet"
            raise NotReady(f"scene {scene_id!r} follows {ctx.parent.id!r}, {why}")
        self._start_slot(scene_id)
        self.indexes()  # reconcile before reading memory
        before = ctx.scene.status
        control = control or RunControl()
        self.store.set_scene_status(scene_id, "generating")
        work = SceneWork(ctx)
        try:
            with self._steps(scene_id, control, tracker):
                return self._generate_takes(work, takes, progress, control)
        except Cancelled:
            self._undo_unfinished(work, before)
            raise
        except BaseException as e:
            status = "failed" if isinstance(e, Exception) else "interrupted"
            try:
                self.store.set_scene_status(scene_id, status, note=f"{type(e).__name__}: {e}")
            except Exception:  # the original error matters more
                pass
            raise

    @contextmanager
    def _steps(self, scene_id: str, control: RunControl, tracker: Optional[Progress]):
        """While a scene is made: after every denoising step, tell the listeners and honour a cancel."""
        gen = self.generator
        if not hasattr(gen, "on_step"):
            yield
            return
        before = gen.on_step
        steps = int(self.store.scene(scene_id).spec.steps or 0)

        def on_step(i: int) -> None:
            if before is not None:
                before(i)
            if tracker is not None:
                tracker.step(scene_id, i + 1, steps)
            control.check()

        gen.on_step = on_step
        try:
            yield
        finally:
            gen.on_step = before

    def _undo_unfinished(self, work: SceneWork, before: str) -> None:
        """After a cancel: remove the media of takes this run made but did not commit, and put the scene back as
        it was (a done scene keeps its chosen take; anything else is planned again)."""
        import shutil

        from . import media

        for job in work.jobs:  # let the writer finish with the files before they go
            try:
                job.wait()
            except BaseException:  # noqa: BLE001 - the files go either way
                pass
        committed = {t.take for t in self.store.takes(work.scene.id)}
        for n in work.made:
            if n not in committed:
                shutil.rmtree(media.take_dir(self.dir, work.scene.id, n), ignore_errors=True)
        self._held = []
        status = before if before in ("done", "stale") else "planned"
        self.store.set_scene_status(work.scene.id, status, note="cancelled")

    def _generate_takes(self, work: SceneWork, takes: int, progress: Optional[ProgressFn],
                        control: RunControl) -> list[TakeRecord]:
        sid = work.scene.id
        times = work.timings
        for stage, do in (("plan", self._plan), ("retrieve", self._retrieve), ("condition", self._condition)):
            self._stage(sid, stage, progress, log=False)
            t = time.perf_counter()
            do(work)
            times[stage + "_s"] = time.perf_counter() - t
        control.check()
        upstream = work.ctx.parent.chosen_take if work.ctx.parent is not None else None
        numbers, committed = self.takes.plan(work.scene, takes, work.prompt, work.plan.records, upstream)
        outcomes: list[TakeOutcome] = []
        results = {}
        for n in numbers:
            if n in committed:  # made by a run that was stopped before it chose: never made twice
                outcomes.append(TakeOutcome.from_graph(committed[n]))
                continue
            seed = self.takes.seed(work.scene.spec, n)
            self._stage(sid, "generate", progress, take=n, seed=seed, steps=int(work.scene.spec.steps or 0))
            work.made.append(n)
            result, job = self._generate(work, n, seed)
            work.jobs.append(job)
            results[n] = result
            control.check()
            self._stage(sid, "observe", progress, take=n)
            t = time.perf_counter()
            outcomes.append(self._observe(work, n, seed, result, job.media, upstream))
            times["observe_s"] = times.get("observe_s", 0.0) + time.perf_counter() - t
        loaded = sum(self.models.load_s.values()) - self._loaded_before
        if loaded:
            times["load_s"] = loaded  # models loaded on first use, inside this scene's slot
        incumbent = self.takes.incumbent(work.scene, committed, numbers)
        best = self.takes.best(outcomes, incumbent)
        control.check()  # the last moment a cancel leaves nothing behind
        self._settle()  # the scene before, when no take of this one was generated (they were all recovered)
        chosen = results.get(best.take.take)
        flight = InFlight(work, outcomes, best, list(work.jobs), progress=progress,
                          last_frames=[] if chosen is None else
                          list(chosen.frames[-self.config.engine.extension_frames:]))
        flight.uses = self._pending_uses(work, best)
        self._inflight = flight
        if chosen is None:  # the chosen take was committed by an earlier run: nothing to wait for
            self._settle()
        else:  # retrieval for the next scene sees this one as committed
            accepted = flight.accepted_appearances()
            self._pending.hold(accepted, flight.uses)
            for index in self.indexes().values():
                index.add(accepted)
        return [o.take for o in outcomes]

    # -- the scene in flight -----------------------------------------------------------------------
    def _in_flight(self, scene_id: str) -> bool:
        return self._inflight is not None and self._inflight.scene_id == scene_id

    def _pending_uses(self, work: SceneWork, best: TakeOutcome) -> dict:
        """``appearance id -> (scene id, identity)``: the use the chosen take makes of each memory it was
        conditioned on, as its commit records it in ``Appearance.uses``."""
        ids = [r.target_id for r in work.plan.records if r.target_kind == "Appearance"]
        if not ids:
            return {}
        kept = best.take.scores.identity_by_character
        return {a.id: (work.scene.id, kept.get(a.character_id))
                for a in self.store.appearances(ids=ids, with_vectors=False, accepted_only=False)}

    def _start_slot(self, scene_id: str) -> None:
        now = time.perf_counter()
        if self._slot is not None and self._inflight is not None and self._inflight.scene_id == self._slot[0]:
            self._inflight.work.timings["wall_s"] = now - self._slot[1]
        self._slot = (scene_id, now)
        self._loaded_before = sum(self.models.load_s.values())

    def _settle(self) -> None:
        """Commit the scene in flight once its takes' media are on disk; nothing to do when none is.

        If writing failed the scene is marked failed, its takes' files are removed and its appearances leave the
        vector index (the graph never had them); the error is raised."""
        flight, self._inflight = self._inflight, None
        if flight is None:
            return
        sid, times = flight.scene_id, flight.work.timings
        try:
            self._wait_for_media(flight)
            self._stage(sid, "commit", flight.progress, take=flight.best.take.take)
            t = time.perf_counter()
            self._commit(flight.work, flight.outcomes, flight.best)
            times["commit_s"] = time.perf_counter() - t
        except BaseException as e:
            self._drop(flight, e)
            raise
        self._pending.clear()
        if flight.last_frames:
            self._recent_frames = ((sid, flight.best.take.take), flight.last_frames)
        if self._slot is not None and self._slot[0] == sid:  # the last scene: its slot ends with its commit
            times["wall_s"] = time.perf_counter() - self._slot[1]
            self._slot = None
        self._report_timings(flight)

    @staticmethod
    def _wait_for_media(flight: InFlight) -> None:
        """Until the takes' files are on disk (raises what writing them raised); the wait and the writing time go
        to the scene's timings."""
        times, t = flight.work.timings, time.perf_counter()
        try:
            for job in flight.jobs:
                job.wait()
        finally:
            times["media_wait_s"] = time.perf_counter() - t
            times["media_write_s"] = sum(j.seconds for j in flight.jobs)

    def _drop(self, flight: InFlight, error: BaseException) -> None:
        """After the scene in flight could not be committed: retrieval and the vector index forget it, and (for an
        error, not an interrupt) it is marked failed."""
        self._pending.clear()
        dropped = [a.id for a in flight.accepted_appearances()]
        if self.index.is_open():
            for index in self.indexes().values():
                index.remove(dropped)
        if isinstance(error, Exception):
            try:
                self.store.set_scene_status(flight.scene_id, "failed", note=f"{type(error).__name__}: {error}")
            except Exception:  # a full disk fails this write too: the scene stays unfinished, resume redoes it
                pass

    def _report_timings(self, flight: InFlight) -> None:
        if not self._timing_listeners:
            return
        best = flight.best
        made = [o for o in flight.outcomes if not o.recovered]
        gen: dict = {}
        for o in made:
            for k, v in (o.timings or {}).items():
                gen[k] = gen.get(k, 0.0) + v
        record = {"scene": flight.scene_id, "take": best.take.take, "takes": len(made),
                  "wall_s": flight.work.timings.get("wall_s"),
                  "stages": {k: v for k, v in flight.work.timings.items() if k != "wall_s"},
                  "generator": gen, "peak_gib": max((o.peak_gib or 0.0 for o in made), default=None),
                  "attempts": [a for o in made for a in o.attempts], "settings": made[-1].settings if made else {}}
        for fn in self._timing_listeners:
            fn(record)

    def _stage(self, scene_id: str, stage: str, progress: Optional[ProgressFn], log: bool = True, **info) -> None:
        """Tell listeners a stage began; with ``log``, also append it (and any held back) to the Event log.

        plan, retrieve and condition take milliseconds, so their events are held back and written in one
        transaction with the next logged stage rather than one transaction each.
        """
        self._held.append(("scene.stage", scene_id, {"stage": stage, **info}))
        if log:
            self.store.append_events(self._held)
            self._held = []
        for fn in ([progress] if progress else []) + self._listeners:
            fn(scene_id, stage, info)

    # -- the six stages --------------------------------------------------------------------------
    def _plan(self, work: SceneWork) -> None:
        """The prompt, from the scene, its cast and its place."""
        ctx = work.ctx
        work.prompt = build_prompt(ctx.scene.spec, ctx.characters, ctx.environment,
                                   self.config.engine.prompt_template)

    def _retrieve(self, work: SceneWork) -> None:
        """Per character: ranked prior appearances on this timeline, and its reference embedding (if any)."""
        ctx = work.ctx
        chars = ctx.characters
        if not chars:
            return
        texts = [retrieval_text(ctx.scene.spec, c, ctx.environment) for c in chars]
        text_emb = self.encoders.embed_text(texts)
        ref_paths = {c.id: self._reference_path(c.reference_path) for c in chars if c.reference_path}
        if ref_paths:
            from .media import load_image

            embs = self.encoders.embed_dino_images([load_image(p) for p in ref_paths.values()])
            work.references = dict(zip(ref_paths, embs))
        k = self.config.engine.retrieve_k
        for c, q in zip(chars, text_emb):
            found = self.retriever.nearest_prior_appearances(
                ctx.scene, c.id, k + SPARE_MEMORIES, text_query=q, identity_ref=work.references.get(c.id),
                tau_character=c.decay_tau)
            kept = []
            for cand in found:
                a = cand.appearance
                full = mediapaths.resolve(self.dir, a.frame_path)
                if full is None or not full.is_file():  # a memory whose frame is gone is skipped, and said so
                    work.notes.append(f"memory {a.id} skipped: its frame {a.frame_path} is missing")
                    continue
                a.frame_path = str(full)  # the generator reads it from this folder
                kept.append(cand)
            work.memories[c.id] = kept[:k]

    def _reference_path(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else Path(self._reference_root()) / p)

    def _condition(self, work: SceneWork, mode: Optional[str] = None) -> None:
        """Which memory becomes which LTX-2 condition, in which mode: the parent's last frames, retrieved
        appearances, reference images. ``mode``: one memory mode for this plan (comparing modes)."""
        from .conditioning import ConditioningParams, plan_conditioning

        ctx, cfg = work.ctx, self.config.engine
        if ctx.parent is not None:
            work.parent_frames = self._parent_frames(work, ctx.parent, cfg.extension_frames)
        spec = ctx.scene.spec
        work.plan = plan_conditioning(
            spec, ctx.transition, work.memories, work.parent_frames,
            params=ConditioningParams.from_config(cfg), width=spec.width, height=spec.height, frames=spec.frames,
            characters=ctx.characters, environment=ctx.environment,
            parent_characters=ctx.parent.spec.characters if ctx.parent is not None else None,
            mode=mode, reference_available=bool(self.config.models.ic_lora), base_dir=self._reference_root())
        work.reference = None
        if work.plan.sheet is not None:
            from . import sheets
            from .generators.base import ReferenceInput

            sheet = work.plan.sheet
            description = sheets.describe(sheet.panels, spec.width, spec.height)
            work.reference = ReferenceInput([sheets.compose(sheet.panels, spec.width, spec.height)],
                                            strength=sheet.strength, loop=sheet.loop, description=description)
            work.prompt = f"{description} {work.prompt}"

    def _parent_frames(self, work: SceneWork, parent: SceneRecord, n: int) -> Optional[list]:
        """The parent take's last ``n`` frames: in memory when it is in flight or was just committed, else read
        from its ``last_frames/`` (missing files are a note, not a failure)."""
        from .media import read_last_frames

        flight = self._inflight
        if flight is not None and flight.scene_id == parent.id and flight.last_frames:
            return flight.last_frames[-n:]
        recent = self._recent_frames
        if recent is not None and recent[0] == (parent.id, parent.chosen_take):
            return recent[1][-n:]
        if not parent.last_frame_path:
            return None
        take_dir = mediapaths.resolve(self.dir, parent.last_frame_path).parent
        try:
            return read_last_frames(take_dir, n)
        except FileNotFoundError:
            work.notes.append(f"the last frames of {parent.id} are missing ({take_dir})")
            return None

    def _generate(self, work: SceneWork, take: int, seed: int):
        """One take through the generator; its media go to the writer (``media/<scene>/take-<n>``): (result, job).

        The scene in flight before this one is committed as soon as the generator returns: its media were written
        while this take generated."""
        from .generators.base import GenerationRequest
        from . import media

        spec = work.scene.spec
        crash_point("before_generate")
        request = GenerationRequest(prompt=work.prompt, conditions=work.plan.conditions, reference=work.reference,
                                    **{**spec.generation(), "seed": seed})
        t = time.perf_counter()
        try:
            result = self.generator.generate(request)
        finally:
            work.timings["generate_s"] = work.timings.get("generate_s", 0.0) + time.perf_counter() - t
            self._settle()
        job = self.writer.submit(media.take_dir(self.dir, spec.id, take), result, fps=spec.fps,
                                 last_n=self.config.engine.extension_frames)
        crash_point("after_generate")
        return result, job

    def _observe(self, work: SceneWork, take: int, seed: int, result, written, upstream=None) -> TakeOutcome:
        """Scores and the appearances to remember, from the take's frames (paths stored relative to the folder)."""
        from .observer import CharacterMemory

        ctx, scene = work.ctx, work.scene
        obs = self.observer.observe(
            result.frames, scene_id=scene.id, prompt=work.prompt,
            characters=[CharacterMemory(c, reference=work.references.get(c.id),
                                        prior=[cand.appearance for cand in work.memories.get(c.id, [])])
                        for c in ctx.characters],
            parent_last_frame=work.parent_frames[-1] if work.parent_frames else None, media_dir=written.take_dir,
            clock=scene.clock, branch=scene.placement.branch, pos=scene.placement.pos, take=take)
        rel = lambda path: mediapaths.relative(self.dir, str(path))  # noqa: E731
        for a in obs.appearances:
            a.frame_path = rel(a.frame_path)
        record = TakeRecord(scene.id, take, seed, work.prompt, rel(written.video_path), rel(written.last_frame_path),
                            rel(written.take_dir), obs.scores,
                            request_key=self.takes.request_key(scene.spec, take, work.prompt, work.plan.records,
                                                               seed=seed, upstream=upstream))
        return TakeOutcome(record, SceneCommit(record, obs.appearances, work.plan.records),
                           attempts=list(result.attempts), timings=dict(result.timings),
                           peak_gib=result.peak_gib, settings=dict(result.settings))

    def _commit(self, work: SceneWork, outcomes: list[TakeOutcome], best: TakeOutcome) -> None:
        """Every take into the graph, the chosen one last (it continues the timeline; when the chosen take kept its
        place, it is chosen again); then the vector index and the scene's done Event."""
        scene = work.scene
        notes = list(work.notes) + [f"take {o.take.take}: {line}" for o in outcomes for line in o.attempts]
        for line in notes:
            self.store.set_scene_status(scene.id, "generating", note=line)
        new = [o for o in outcomes if o is not best]
        for o in new:
            if not o.recovered:
                o.commit.choose = False
                self.store.commit_take(o.commit)
        if best.recovered:
            self.store.choose_take(scene.id, best.take.take)
        else:
            best.commit.choose = True
            self.store.commit_take(best.commit)
        crash_point("after_commit")
        self.index.update_scene(scene.id)
        now = self.store.scene(scene.id)
        if now is not None and now.spec != work.scene.spec:  # edited while it was being made
            self.store.mark_stale({scene.id: Cause(scene.id, "edited while it was being generated")})
        self.store.append_event("scene.done", scene.id, {"take": best.take.take,
                                                         "scores": best.take.scores.as_dict()})


#: Memories retrieved beyond ``retrieve_k`` per character, so that one whose frame is gone can be skipped.
SPARE_MEMORIES = 4
