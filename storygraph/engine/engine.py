"""StoryEngine: plan → retrieve → condition → generate → observe → commit, one scene at a time.

The graph is the source of truth. A scene goes planned → generating → done | failed; each take is
committed in one transaction (take, appearances with embeddings, provenance, reinforcement of the memories it
used, APPEARS_IN updates, an Event), and only then is the vector index updated, so a crash at any point
leaves a story that ``resume`` finishes: committed takes are never made twice, and the index is reconciled
with the graph on open.

The engine is put together from parts with one job each: the store (the graph), a :class:`ModelRegistry`
(models loaded on first use), an :class:`IndexKeeper` (the vector indexes), a :class:`TakeBook` (seeds, request
keys, take numbers, the best take, reinforcement) and a :class:`GenerationLock` (one generation per story).
``StoryEngine.open(folder)`` does the folder work (folders, ``storygraph.toml``, the store) and builds them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..config import Config
from ..domain import Character, Environment, SceneSpec, Story, Transition
from ..faults import crash_point
from ..graphdb import SceneCommit, SceneContext, SceneRecord, StoryStore, TakeRecord, TransitionRecord, open_store
from ..timeline import child_placement, place_scenes, transition_decay
from .checks import EditChecks
from .errors import EngineError, GenerationBusy, IndexNotSaved, InvalidRequest, NotReady, SceneExists, SceneNotFound
from .indexes import IndexKeeper
from .locks import GenerationLock
from .models import ModelRegistry
from .prompts import build_prompt, retrieval_text
from .takes import TakeBook, TakeOutcome

__all__ = ["StoryEngine", "STAGES", "SceneWork", "EngineError", "SceneNotFound", "SceneExists", "NotReady",
           "GenerationBusy", "InvalidRequest", "IndexNotSaved"]

STAGES = ("plan", "retrieve", "condition", "generate", "observe", "commit")
ProgressFn = Callable[[str, str, dict], None]  # (scene id, stage, info)


def reference_root(store: StoryStore, story_dir: Path) -> str:
    """The folder relative reference image paths resolve against: the story file's, else the story folder."""
    meta = store.story_meta() or {}
    src = meta.get("source_path")
    return str(Path(src).parent) if src else str(story_dir)


@dataclass
class SceneWork:
    """What the stages of one scene hand each other."""

    ctx: SceneContext
    prompt: str = ""
    memories: dict = field(default_factory=dict)  # character id -> ranked prior appearances (Candidates)
    references: dict = field(default_factory=dict)  # character id -> DINOv2 embedding of its reference image
    parent_frames: Optional[list] = None  # the parent take's last frames, oldest first
    plan: Any = None  # the ConditioningPlan

    @property
    def scene(self) -> SceneRecord:
        return self.ctx.scene


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
        self.takes = takes or TakeBook(store, config.engine, config.memory)
        self.checks = EditChecks(store, self.dir, config)
        self._retriever = None
        self._held: list = []  # stage events not yet written
        self._listeners: list[Callable] = []

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
        return cls(folder, store, config, models=models)

    def close(self) -> None:
        """Save the vector index, close the graph, release the story. The graph and the lock are let go even when
        the save fails (a full disk): the index is derived, and the next open rebuilds what it lacks; the
        failure is raised after, as an ``IndexNotSaved``."""
        try:
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
        self.store.load_story(story)
        return story

    def add_character(self, character: Character) -> None:
        self.checks.character(character)
        self.store.upsert_character(character)
        self.store.append_event("character.updated", character.id)

    def add_environment(self, environment: Environment) -> None:
        self.checks.environment(environment)
        self.store.upsert_environment(environment)
        self.store.append_event("environment.updated", environment.id)

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
        """Change a scene's spec (action, characters, lighting…); a generated scene goes back to planned."""
        scene = self.store.scene(scene_id)
        if scene is None:
            raise SceneNotFound(f"no scene {scene_id!r}")
        spec = self.checks.scene_edit(scene, fields)
        self.store.upsert_scene(spec, scene.placement)
        if scene.status != "planned":
            self.store.set_scene_status(scene_id, "planned", note="edited")
        else:
            self.store.append_event("scene.updated", scene_id)
        return self.store.scene(scene_id)

    def add_transition(self, transition: Transition) -> None:
        """Join two scenes (the child's incoming transition, if any, is replaced). The placements (clock, branch)
        are recomputed from the whole story."""
        placements = self.checks.transition(transition)
        scenes = self.store.scenes()
        self.store.upsert_transition(self._transition_record(transition))
        for s in scenes:
            if not placements[s.id].same_place(s.placement):
                self.store.upsert_scene(s.spec, placements[s.id])
        self.store.append_event("transition.added", transition.to_id, {"from": transition.from_id})

    def _transition_record(self, t: Transition) -> TransitionRecord:
        gap = t.effective_gap
        return TransitionRecord(t.from_id, t.to_id, t.kind, gap, transition_decay(gap, self.config.memory.tau_story))

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
            self._retriever = Retriever(self.store, idx["clip"], idx["dino"], self.config.memory)
        return self._retriever

    def _reference_root(self) -> str:
        return reference_root(self.store, self.dir)

    # -- generation ------------------------------------------------------------------------------
    def run(self, until: Optional[str] = None, takes: Optional[int] = None,
            progress: Optional[ProgressFn] = None) -> list[str]:
        """Generate every unfinished scene in timeline order (stopping after ``until``); returns their ids.

        A scene whose parent is not done is skipped (its parent failed); a killed run resumes here.
        """
        done_ids = []
        with self.lock.held():
            self.indexes()  # reconciled with the graph (and saved on close) even when nothing is left to make
            for scene in self.store.scenes():
                if scene.status == "done":
                    if scene.id == until:
                        break
                    continue
                parent_id = scene.placement.parent_id
                if parent_id is not None:
                    parent = self.store.scene(parent_id)
                    if parent is None or parent.status != "done":
                        continue
                self._run_scene(scene.id, takes or self.config.engine.takes, progress)
                done_ids.append(scene.id)
                if scene.id == until:
                    break
        return done_ids

    def generate(self, scene_id: str, takes: int = 1, progress: Optional[ProgressFn] = None) -> list[TakeRecord]:
        """Generate ``takes`` takes of one scene; the best continues the timeline."""
        with self.lock.held():
            return self._run_scene(scene_id, takes, progress)

    def choose_take(self, scene_id: str, take: int) -> None:
        with self.lock.held():
            self.store.choose_take(scene_id, take)
            self.index.update_scene(scene_id)

    def _run_scene(self, scene_id: str, takes: int, progress: Optional[ProgressFn]) -> list[TakeRecord]:
        if takes < 1:
            raise InvalidRequest("takes must be at least 1")
        ctx = self.store.scene_context(scene_id)
        if ctx.parent is not None and ctx.parent.status != "done":
            raise NotReady(f"scene {scene_id!r} follows {ctx.parent.id!r}, which is not generated yet")
        self.indexes()  # reconcile before reading memory
        self.store.set_scene_status(scene_id, "generating")
        try:
            return self._generate_takes(SceneWork(ctx), takes, progress)
        except BaseException as e:
            if isinstance(e, Exception):
                try:
                    self.store.set_scene_status(scene_id, "failed", note=f"{type(e).__name__}: {e}")
                except Exception:  # a full disk fails this write too: the scene stays unfinished, resume redoes it
                    pass
            raise

    def _generate_takes(self, work: SceneWork, takes: int, progress: Optional[ProgressFn]) -> list[TakeRecord]:
        sid = work.scene.id
        self._stage(sid, "plan", progress, log=False)
        self._plan(work)
        self._stage(sid, "retrieve", progress, log=False)
        self._retrieve(work)
        self._stage(sid, "condition", progress, log=False)
        self._condition(work)
        numbers, committed = self.takes.plan(work.scene, takes, work.prompt, work.plan.records)
        outcomes: list[TakeOutcome] = []
        for n in numbers:
            if n in committed:  # made by a run that was stopped before it chose: never made twice
                outcomes.append(TakeOutcome.from_graph(committed[n]))
                continue
            seed = self.takes.seed(work.scene.spec, n)
            self._stage(sid, "generate", progress, take=n, seed=seed)
            result, media = self._generate(work, n, seed)
            self._stage(sid, "observe", progress, take=n)
            outcomes.append(self._observe(work, n, seed, result, media))
        best = self.takes.best(outcomes)
        self._stage(sid, "commit", progress, take=best.take.take)
        self._commit(work, outcomes, best)
        return [o.take for o in outcomes]

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
        for c, q in zip(chars, text_emb):
            work.memories[c.id] = self.retriever.nearest_prior_appearances(
                ctx.scene, c.id, self.config.engine.retrieve_k, text_query=q, identity_ref=work.references.get(c.id),
                tau_character=c.decay_tau)

    def _reference_path(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else Path(self._reference_root()) / p)

    def _condition(self, work: SceneWork) -> None:
        """Which frames become which LTX-2 conditions: the parent's last frames, retrieved memory, references."""
        from .conditioning import ConditioningParams, plan_conditioning
        from .media import read_last_frames

        ctx, cfg = work.ctx, self.config.engine
        if ctx.parent is not None and ctx.parent.last_frame_path:
            work.parent_frames = read_last_frames(Path(ctx.parent.last_frame_path).parent, cfg.extension_frames)
        work.plan = plan_conditioning(
            ctx.scene.spec, ctx.transition, work.memories, work.parent_frames,
            params=ConditioningParams.from_config(cfg), names={c.id: c.name for c in ctx.characters},
            base_dir=self._reference_root())

    def _generate(self, work: SceneWork, take: int, seed: int):
        """One take through the generator, written under ``media/<scene>/take-<n>``: (result, media)."""
        from .generators.base import GenerationRequest
        from . import media

        spec = work.scene.spec
        crash_point("before_generate")
        request = GenerationRequest(prompt=work.prompt, conditions=work.plan.conditions,
                                    **{**spec.generation(), "seed": seed})
        result = self.generator.generate(request)
        take_dir = media.take_dir(self.dir, spec.id, take)
        # samples=0: the observer samples the frames in memory and writes the ones memory points at
        written = media.write_take(take_dir, result, fps=spec.fps, last_n=self.config.engine.extension_frames,
                                   samples=0)
        crash_point("after_generate")
        return result, written

    def _observe(self, work: SceneWork, take: int, seed: int, result, written) -> TakeOutcome:
        """Scores and the appearances to remember, from the take's frames."""
        from .observer import CharacterMemory

        ctx, scene = work.ctx, work.scene
        obs = self.observer.observe(
            result.frames, scene_id=scene.id, prompt=work.prompt,
            characters=[CharacterMemory(c, reference=work.references.get(c.id),
                                        prior=[cand.appearance for cand in work.memories.get(c.id, [])])
                        for c in ctx.characters],
            parent_last_frame=work.parent_frames[-1] if work.parent_frames else None, media_dir=written.take_dir,
            clock=scene.clock, branch=scene.placement.branch, pos=scene.placement.pos, take=take)
        record = TakeRecord(scene.id, take, seed, work.prompt, str(written.video_path),
                            str(written.last_frame_path), str(written.take_dir), obs.scores,
                            request_key=self.takes.request_key(scene.spec, take, work.prompt, work.plan.records))
        return TakeOutcome(record, SceneCommit(record, obs.appearances, work.plan.records),
                           attempts=list(result.attempts))

    def _commit(self, work: SceneWork, outcomes: list[TakeOutcome], best: TakeOutcome) -> None:
        """Every take into the graph, the best last (it continues the timeline, with the reinforcement of the
        memories it used); then the vector index and the scene's done Event."""
        scene = work.scene
        for o in outcomes:
            for line in o.attempts:
                self.store.set_scene_status(scene.id, "generating", note=f"take {o.take.take}: {line}")
        for o in sorted(outcomes, key=lambda o: o is best):  # the chosen take last, so the scene ends "done"
            chosen = o is best
            reinforcements = self.takes.reinforcements(work.plan.records, o.take, scene.clock) if chosen else []
            if o.recovered:
                if chosen:
                    self.store.choose_take(scene.id, o.take.take, reinforcements)
                continue
            o.commit.choose = chosen
            o.commit.reinforcements = reinforcements
            self.store.commit_take(o.commit)
        crash_point("after_commit")
        self.index.update_scene(scene.id)
        self.store.append_event("scene.done", scene.id, {"take": best.take.take,
                                                         "scores": best.take.scores.as_dict()})
