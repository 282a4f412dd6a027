"""StoryEngine: plan → retrieve → condition → generate → observe → commit, one scene at a time.

The graph is the source of truth. A scene goes planned → generating → done | failed; each take is
committed in one transaction (take, appearances with embeddings, provenance, reinforcement of the memories it
used, APPEARS_IN updates, an Event), and only then is the vector index updated, so a crash at any point
leaves a story that ``resume`` finishes: committed takes are never made twice, and the index is reconciled
with the graph on open.

The engine is put together from parts with one job each: the store (the graph), a :class:`ModelRegistry`
(models loaded on first use), an :class:`IndexKeeper` (the vector indexes), a :class:`TakeBook` (seeds, request
keys, take numbers, the best take, reinforcement), a :class:`GenerationLock` (one generation per story) and a
:class:`MediaWriter` (takes' files written in the background). ``StoryEngine.open(folder)`` does the folder work
(folders, ``storygraph.toml``, the store) and builds them.

Keeping the GPU busy: a take's media are written while the engine goes on, and its scene is committed once they
are on disk — during the next scene's generation when ``run`` goes through a story (see :mod:`.writer`). The
scene waiting for its files is *in flight*: the next scene extends from its frames in memory and retrieves as if
it were committed. Per-scene timings (every stage, the generator's own, media writing) go to ``on_timings``
listeners.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..config import Config
from ..domain import Character, Environment, SceneSpec, Story, Transition
from ..faults import crash_point
from ..graphdb import SceneCommit, SceneContext, SceneRecord, StoryStore, TakeRecord, TransitionRecord, open_store
from ..timeline import child_placement, place_scenes, transition_decay
from .errors import EngineError, GenerationBusy, InvalidRequest, NotReady, SceneExists, SceneNotFound
from .indexes import IndexKeeper
from .locks import GenerationLock
from .models import ModelRegistry
from .prompts import build_prompt, retrieval_text
from .takes import TakeBook, TakeOutcome
from .writer import InFlight, MediaWriter, PendingView

__all__ = ["StoryEngine", "STAGES", "SceneWork", "EngineError", "SceneNotFound", "SceneExists", "NotReady",
           "GenerationBusy", "InvalidRequest"]

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
    timings: dict = field(default_factory=dict)  # seconds per stage of this scene

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
        self.writer = MediaWriter(config.engine.media_writer)
        self._pending = PendingView(store)  # the store as retrieval reads it, the scene in flight included
        self._inflight: Optional[InFlight] = None
        self._recent_frames: Optional[tuple] = None  # ((scene id, take), last frames) of the last committed scene
        self._retriever = None
        self._held: list = []  # stage events not yet written
        self._listeners: list[Callable] = []
        self._timing_listeners: list[Callable] = []
        self._slot: Optional[tuple] = None  # (scene id, start) of the scene the loop is on, for its wall time

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
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "media").mkdir(exist_ok=True)
        config = config or Config.load(folder)
        store = open_store(graph or folder, story, database=database, memory=config.memory)
        models = ModelRegistry(config, folder, lambda: reference_root(store, folder), generator=generator,
                               encoders=encoders)
        return cls(folder, store, config, models=models)

    def close(self) -> None:
        try:
            self._settle()  # nothing in flight outside run() and generate(), which settle before returning
        finally:
            self.writer.close()
            self.index.save()
            self.store.close()
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- building the story ----------------------------------------------------------------------
    def load(self, story_or_path) -> Story:
        from ..storyfile import load_story

        story = story_or_path if isinstance(story_or_path, Story) else load_story(story_or_path)
        self.store.load_story(story)
        return story

    def add_character(self, character: Character) -> None:
        self.store.upsert_character(character)
        self.store.append_event("character.updated", character.id)

    def add_environment(self, environment: Environment) -> None:
        self.store.upsert_environment(environment)
        self.store.append_event("environment.updated", environment.id)

    def add_scene(self, spec: SceneSpec, parent_id: Optional[str] = None, kind: str = "cut",
                  gap: Optional[float] = None) -> SceneRecord:
        """Add a scene, optionally after ``parent_id``: a parent that already has a child gets a new branch."""
        if self.store.scene(spec.id) is not None:
            raise SceneExists(f"scene {spec.id!r} already exists; use update_scene")
        if parent_id is None:
            placement = place_scenes([spec.id], [])[spec.id]
            self.store.upsert_scene(spec, placement)
        else:
            parent = self.store.scene(parent_id)
            if parent is None:
                raise SceneNotFound(f"no scene {parent_id!r}")
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
        if "characters" in fields:
            fields["characters"] = tuple(fields["characters"])
        known = set(SceneSpec.__dataclass_fields__) - {"id"}
        bad = set(fields) - known
        if bad:
            raise InvalidRequest(f"unknown scene field(s) {sorted(bad)}")
        spec = replace(scene.spec, **fields)
        self.store.upsert_scene(spec, scene.placement)
        if scene.status != "planned":
            self.store.set_scene_status(scene_id, "planned", note="edited")
        else:
            self.store.append_event("scene.updated", scene_id)
        return self.store.scene(scene_id)

    def add_transition(self, transition: Transition) -> None:
        """Join two scenes. The child's placement (clock, branch) is recomputed from the whole story."""
        transitions = [Transition(t.from_id, t.to_id, t.kind, t.gap) for t in self.store.transitions()]
        transitions = [t for t in transitions if t.to_id != transition.to_id] + [transition]
        scenes = self.store.scenes()
        placements = place_scenes([s.id for s in scenes], transitions)
        self.store.upsert_transition(self._transition_record(transition))
        for s in scenes:
            if placements[s.id] != s.placement:
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
            progress: Optional[ProgressFn] = None) -> list[str]:
        """Generate every unfinished scene in timeline order (stopping after ``until``); returns their ids.

        A scene whose parent is not done is skipped (its parent failed); a killed run resumes here.
        """
        done_ids = []
        with self.lock.held():
            try:
                for scene in self.store.scenes():
                    if scene.status == "done":
                        if scene.id == until:
                            break
                        continue
                    parent_id = scene.placement.parent_id
                    if parent_id is not None:
                        parent = self.store.scene(parent_id)
                        if parent is None or not (parent.status == "done" or self._in_flight(parent_id)):
                            continue
                    self._run_scene(scene.id, takes or self.config.engine.takes, progress)
                    done_ids.append(scene.id)
                    if scene.id == until:
                        break
            finally:
                self._settle()
        return done_ids

    def generate(self, scene_id: str, takes: int = 1, progress: Optional[ProgressFn] = None) -> list[TakeRecord]:
        """Generate ``takes`` takes of one scene; the best continues the timeline."""
        with self.lock.held():
            try:
                return self._run_scene(scene_id, takes, progress)
            finally:
                self._settle()

    def choose_take(self, scene_id: str, take: int) -> None:
        with self.lock.held():
            self.store.choose_take(scene_id, take)
            self.index.update_scene(scene_id)

    def _run_scene(self, scene_id: str, takes: int, progress: Optional[ProgressFn]) -> list[TakeRecord]:
        if takes < 1:
            raise InvalidRequest("takes must be at least 1")
        if self._in_flight(scene_id):
            self._settle()  # the same scene again: its takes so far are committed first
        ctx = self.store.scene_context(scene_id)
        if ctx.parent is not None and ctx.parent.status != "done" and not self._in_flight(ctx.parent.id):
            raise NotReady(f"scene {scene_id!r} follows {ctx.parent.id!r}, which is not generated yet")
        self._start_slot(scene_id)
        self.indexes()  # reconcile before reading memory
        self.store.set_scene_status(scene_id, "generating")
        try:
            return self._generate_takes(SceneWork(ctx), takes, progress)
        except BaseException as e:
            if isinstance(e, Exception):
                self.store.set_scene_status(scene_id, "failed", note=f"{type(e).__name__}: {e}")
            raise

    def _generate_takes(self, work: SceneWork, takes: int, progress: Optional[ProgressFn]) -> list[TakeRecord]:
        sid = work.scene.id
        times = work.timings
        for stage, do in (("plan", self._plan), ("retrieve", self._retrieve), ("condition", self._condition)):
            self._stage(sid, stage, progress, log=False)
            t = time.perf_counter()
            do(work)
            times[stage + "_s"] = time.perf_counter() - t
        numbers, committed = self.takes.plan(work.scene, takes, work.prompt, work.plan.records)
        outcomes: list[TakeOutcome] = []
        jobs, results = [], {}
        for n in numbers:
            if n in committed:  # made by a run that was stopped before it chose: never made twice
                outcomes.append(TakeOutcome.from_graph(committed[n]))
                continue
            seed = self.takes.seed(work.scene.spec, n)
            self._stage(sid, "generate", progress, take=n, seed=seed)
            result, job = self._generate(work, n, seed)
            jobs.append(job)
            results[n] = result
            self._stage(sid, "observe", progress, take=n)
            t = time.perf_counter()
            outcomes.append(self._observe(work, n, seed, result, job.media))
            times["observe_s"] = times.get("observe_s", 0.0) + time.perf_counter() - t
        loaded = sum(self.models.load_s.values()) - getattr(self, "_loaded_before", 0.0)
        if loaded:
            times["load_s"] = loaded  # models loaded on first use, inside this scene's slot
        best = self.takes.best(outcomes)
        self._settle()  # the scene before, when no take of this one was generated (they were all recovered)
        chosen = results.get(best.take.take)
        flight = InFlight(work, outcomes, best, jobs, progress=progress,
                          last_frames=[] if chosen is None else list(chosen.frames[-self.config.engine.extension_frames:]))
        flight.reinforcements = self.takes.reinforcements(work.plan.records, best.take, work.scene.clock)
        self._inflight = flight
        if chosen is None:  # the chosen take was committed by an earlier run: nothing to wait for
            self._settle()
        else:  # retrieval for the next scene sees this one as committed
            accepted = flight.accepted_appearances()
            self._pending.hold(accepted, flight.reinforcements)
            for index in self.indexes().values():
                index.add(accepted)
        return [o.take for o in outcomes]

    # -- the scene in flight -----------------------------------------------------------------------
    def _in_flight(self, scene_id: str) -> bool:
        return self._inflight is not None and self._inflight.scene_id == scene_id

    def _start_slot(self, scene_id: str) -> None:
        now = time.perf_counter()
        if self._slot is not None and self._inflight is not None and self._inflight.scene_id == self._slot[0]:
            self._inflight.work.timings["wall_s"] = now - self._slot[1]
        self._slot = (scene_id, now)
        self._loaded_before = sum(self.models.load_s.values())

    def _settle(self) -> None:
        """Commit the scene in flight once its takes' media are on disk; nothing to do when none is.

        If writing failed the scene is marked failed and its appearances leave the vector index (the graph never
        had them); the error is raised."""
        flight, self._inflight = self._inflight, None
        if flight is None:
            return
        sid, times = flight.scene_id, flight.work.timings
        t = time.perf_counter()
        try:
            try:
                for job in flight.jobs:
                    job.wait()
            finally:
                times["media_wait_s"] = time.perf_counter() - t
                times["media_write_s"] = sum(j.seconds for j in flight.jobs)
            self._stage(sid, "commit", flight.progress, take=flight.best.take.take)
            t = time.perf_counter()
            self._commit(flight.work, flight.outcomes, flight.best, flight.reinforcements)
            times["commit_s"] = time.perf_counter() - t
        except BaseException as e:
            self._pending.clear()
            dropped = [a.id for a in flight.accepted_appearances()]
            for index in self.indexes().values():
                index.remove(dropped)
            if isinstance(e, Exception):
                self.store.set_scene_status(sid, "failed", note=f"{type(e).__name__}: {e}")
            raise
        self._pending.clear()
        if flight.last_frames:
            self._recent_frames = ((sid, flight.best.take.take), flight.last_frames)
        if self._slot is not None and self._slot[0] == sid:  # the last scene: its slot ends with its commit
            times["wall_s"] = time.perf_counter() - self._slot[1]
            self._slot = None
        self._report_timings(flight)

    def _report_timings(self, flight: InFlight) -> None:
        if not self._timing_listeners:
            return
        best = flight.best
        made = [o for o in flight.outcomes if not o.recovered]
        gen = {}
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
        if ctx.parent is not None:
            work.parent_frames = self._parent_frames(ctx.parent, cfg.extension_frames)
        work.plan = plan_conditioning(
            ctx.scene.spec, ctx.transition, work.memories, work.parent_frames,
            params=ConditioningParams.from_config(cfg), names={c.id: c.name for c in ctx.characters},
            base_dir=self._reference_root())

    def _parent_frames(self, parent: SceneRecord, n: int) -> Optional[list]:
        """The parent take's last ``n`` frames: in memory when it is in flight or was just committed, else read
        from its ``last_frames/``."""
        from .media import read_last_frames

        flight = self._inflight
        if flight is not None and flight.scene_id == parent.id and flight.last_frames:
            return flight.last_frames[-n:]
        recent = self._recent_frames
        if recent is not None and recent[0] == (parent.id, parent.chosen_take):
            return recent[1][-n:]
        if parent.last_frame_path:
            return read_last_frames(Path(parent.last_frame_path).parent, n)
        return None

    def _generate(self, work: SceneWork, take: int, seed: int):
        """One take through the generator; its media go to the writer (``media/<scene>/take-<n>``): (result, job).

        The scene in flight before this one is committed as soon as the generator returns: its media were written
        while this take generated."""
        from .generators.base import GenerationRequest
        from . import media

        spec = work.scene.spec
        crash_point("before_generate")
        request = GenerationRequest(prompt=work.prompt, conditions=work.plan.conditions,
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
                           attempts=list(result.attempts), timings=dict(result.timings),
                           peak_gib=result.peak_gib, settings=dict(result.settings))

    def _commit(self, work: SceneWork, outcomes: list[TakeOutcome], best: TakeOutcome,
                reinforcements: Optional[list] = None) -> None:
        """Every take into the graph, the best last (it continues the timeline, with the reinforcement of the
        memories it used); then the vector index and the scene's done Event."""
        scene = work.scene
        for o in outcomes:
            for line in o.attempts:
                self.store.set_scene_status(scene.id, "generating", note=f"take {o.take.take}: {line}")
        for o in sorted(outcomes, key=lambda o: o is best):  # the chosen take last, so the scene ends "done"
            chosen = o is best
            used = []
            if chosen:
                used = (reinforcements if reinforcements is not None
                        else self.takes.reinforcements(work.plan.records, o.take, scene.clock))
            if o.recovered:
                if chosen:
                    self.store.choose_take(scene.id, o.take.take, used)
                continue
            o.commit.choose = chosen
            o.commit.reinforcements = used
            self.store.commit_take(o.commit)
        crash_point("after_commit")
        self.index.update_scene(scene.id)
        self.store.append_event("scene.done", scene.id, {"take": best.take.take,
                                                         "scores": best.take.scores.as_dict()})
