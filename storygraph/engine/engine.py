"""StoryEngine: plan → retrieve → condition → generate → observe → commit, one scene at a time.

The graph is the source of truth. A scene goes planned → generating → done | failed; each take is
committed in one transaction (take, appearances with embeddings, provenance, reinforcement of the memories it
used, APPEARS_IN updates, an Event), and only then is the vector index updated, so a crash at any point
leaves a story that ``resume`` finishes: committed takes are never made twice, and the index is reconciled
with the graph on open.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from ..config import Config, resolve_device
from ..domain import (
    Candidate, Character, ConditionRecord, Environment, SceneSpec, Story, Transition,
)
from ..graphdb import SceneCommit, SceneRecord, TakeRecord, TransitionRecord, open_store
from ..faults import crash_point
from ..timeline import child_placement, place_scenes, transition_decay
from . import memory
from .prompts import build_prompt, retrieval_text

STAGES = ("plan", "retrieve", "condition", "generate", "observe", "commit")
ProgressFn = Callable[[str, str, dict], None]  # (scene id, stage, info)


class EngineError(RuntimeError):
    pass


@dataclass
class TakeOutcome:
    take: TakeRecord
    commit: SceneCommit
    timings: dict = field(default_factory=dict)


class StoryEngine:
    """The loop users run. Open it on a story folder (embedded graph) or a folder plus a Neo4j URI."""

    def __init__(self, story_dir, graph: Optional[str] = None, config: Optional[Config] = None,
                 story: Optional[str] = None, database: Optional[str] = None, generator=None, encoders=None):
        self.dir = Path(story_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "media").mkdir(exist_ok=True)
        self.config = config or Config.load(self.dir)
        self.store = open_store(graph or self.dir, story, database=database, memory=self.config.memory)
        self._generator = generator
        self._encoders = encoders
        self._observer = None
        self._retriever = None
        self._indexes = None
        self._unsaved = 0  # scenes indexed since the last save
        self._held: list = []  # stage events not yet written
        self._work_lock = threading.Lock()
        self._lockfile = None
        self._listeners: list[Callable] = []

    # -- opening and closing ---------------------------------------------------------------------
    @classmethod
    def open(cls, target, config: Optional[Config] = None, **kw) -> "StoryEngine":
        """``target``: a story folder, or a ``neo4j://`` URI (media then go to ``kw['story_dir']`` or ``.``)."""
        from ..graphdb.neo4j import is_neo4j_uri

        if is_neo4j_uri(str(target)):
            return cls(kw.pop("story_dir", "."), graph=str(target), config=config, **kw)
        return cls(target, config=config, **kw)

    def close(self) -> None:
        self.save_index()
        self.store.close()
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

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
            raise EngineError(f"scene {spec.id!r} already exists; use update_scene")
        if parent_id is None:
            placement = place_scenes([spec.id], [])[spec.id]
            self.store.upsert_scene(spec, placement)
        else:
            parent = self.store.scene(parent_id)
            if parent is None:
                raise EngineError(f"no scene {parent_id!r}")
            t = Transition(parent_id, spec.id, kind, gap)
            has_child = any(x.from_id == parent_id for x in self.store.transitions())
            placement = child_placement(parent.placement, spec.id, t.effective_gap, continues_branch=not has_child)
            self.store.upsert_scene(spec, placement)
            self.store.upsert_transition(TransitionRecord(
                parent_id, spec.id, kind, t.effective_gap, transition_decay(t.effective_gap, self.config.memory.tau_story)))
        self.store.append_event("scene.added", spec.id)
        return self.store.scene(spec.id)

    def update_scene(self, scene_id: str, **fields) -> SceneRecord:
        """Change a scene's spec (action, characters, lighting…); a generated scene goes back to planned."""
        scene = self.store.scene(scene_id)
        if scene is None:
            raise EngineError(f"no scene {scene_id!r}")
        if "characters" in fields:
            fields["characters"] = tuple(fields["characters"])
        known = set(SceneSpec.__dataclass_fields__) - {"id"}
        bad = set(fields) - known
        if bad:
            raise EngineError(f"unknown scene field(s) {sorted(bad)}")
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
        tau = self.config.memory.tau_story
        self.store.upsert_transition(TransitionRecord(transition.from_id, transition.to_id, transition.kind,
                                                      transition.effective_gap,
                                                      transition_decay(transition.effective_gap, tau)))
        for s in scenes:
            if placements[s.id] != s.placement:
                self.store.upsert_scene(s.spec, placements[s.id])
        self.store.append_event("transition.added", transition.to_id, {"from": transition.from_id})

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

    # -- models ----------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return resolve_device(self.config.models.device)

    def _resolve(self, source: str) -> str:
        if not source:
            return source
        p = Path(source).expanduser()
        if not p.is_absolute() and (self.dir / p).exists():
            return str(self.dir / p)
        return str(p) if p.exists() else source

    @property
    def encoders(self):
        if self._encoders is None:
            from .encoders import Encoders

            m = self.config.models
            self._encoders = Encoders.load(clip=self._resolve(m.clip), dino=self._resolve(m.dino), device=self.device)
        return self._encoders

    @property
    def generator(self):
        if self._generator is None:
            from .generators.ltx2 import LTX2Generator

            m = self.config.models
            self._generator = LTX2Generator.from_pretrained(
                self._resolve(m.ltx2), device=self.device, offload=m.offload or None, vae_tiling=m.vae_tiling,
                upsampler=self._resolve(m.upsampler) or None)
        return self._generator

    @property
    def observer(self):
        if self._observer is None:
            from .observer import Observer

            self._observer = Observer(self.encoders, samples=self.config.engine.observe_frames,
                                      params=self.config.memory, reference_root=self._reference_root())
        return self._observer

    def _reference_root(self) -> str:
        meta = self.store.story_meta() or {}
        src = meta.get("source_path")
        return str(Path(src).parent) if src else str(self.dir)

    def indexes(self) -> dict:
        """The CLIP and DINOv2 vector indexes, reconciled with the graph on first use."""
        if self._indexes is None:
            from .vectors import VectorIndex, reconcile_all

            folder = self.dir / "vectors"
            self._indexes = {space: VectorIndex.open(folder, space, device=self.device) for space in ("clip", "dino")}
            reconcile_all(self.store, self._indexes)  # one read of the graph for both spaces
        return self._indexes

    @property
    def retriever(self):
        if self._retriever is None:
            from .retrieval import Retriever

            idx = self.indexes()
            self._retriever = Retriever(self.store, idx["clip"], idx["dino"], self.config.memory)
        return self._retriever

    # -- generation ------------------------------------------------------------------------------
    @contextmanager
    def _exclusive(self):
        """One generation worker at a time per story: a thread lock here, a file lock across processes."""
        if not self._work_lock.acquire(blocking=False):
            raise EngineError("a generation is already running for this story")
        try:
            if self._lockfile is None:
                import fcntl

                self._lockfile = open(self.dir / ".generate.lock", "w")
                try:
                    fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    self._lockfile.close()
                    self._lockfile = None
                    raise EngineError(f"another process is generating scenes of {self.dir}") from e
            yield
        finally:
            self._work_lock.release()

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

    def run(self, until: Optional[str] = None, takes: Optional[int] = None,
            progress: Optional[ProgressFn] = None) -> list[str]:
        """Generate every unfinished scene in timeline order (stopping after ``until``); returns their ids.

        A scene whose parent is not done is skipped (its parent failed); a killed run resumes here.
        """
        done_ids = []
        with self._exclusive():
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
                self._generate(scene.id, takes or self.config.engine.takes, progress)
                done_ids.append(scene.id)
                if scene.id == until:
                    break
        return done_ids

    def generate(self, scene_id: str, takes: int = 1, progress: Optional[ProgressFn] = None) -> list[TakeRecord]:
        """Generate ``takes`` takes of one scene; the best continues the timeline."""
        with self._exclusive():
            return self._generate(scene_id, takes, progress)

    def _generate(self, scene_id: str, takes: int, progress: Optional[ProgressFn]) -> list[TakeRecord]:
        if takes < 1:
            raise EngineError("takes must be at least 1")
        ctx = self.store.scene_context(scene_id)
        if ctx.parent is not None and ctx.parent.status != "done":
            raise EngineError(f"scene {scene_id!r} follows {ctx.parent.id!r}, which is not generated yet")
        self.indexes()  # reconcile before reading memory
        self.store.set_scene_status(scene_id, "generating")
        try:
            return self._generate_takes(ctx, takes, progress)
        except BaseException as e:
            if isinstance(e, Exception):
                self.store.set_scene_status(scene_id, "failed", note=f"{type(e).__name__}: {e}")
            raise

    def _generate_takes(self, ctx, takes: int, progress) -> list[TakeRecord]:
        from .conditioning import ConditioningParams, plan_conditioning
        from .generators.base import GenerationRequest
        from .media import read_last_frames, write_take
        from .observer import CharacterMemory

        cfg = self.config.engine
        scene = ctx.scene
        spec = scene.spec
        sid = scene.id
        timings: dict = {}

        t = time.perf_counter()
        self._stage(sid, "plan", progress, log=False)
        prompt = build_prompt(spec, ctx.characters, ctx.environment, cfg.prompt_template)
        timings["plan_s"] = time.perf_counter() - t

        t = time.perf_counter()
        self._stage(sid, "retrieve", progress, log=False)
        memories, references = self._retrieve(ctx)
        timings["retrieve_s"] = time.perf_counter() - t

        t = time.perf_counter()
        self._stage(sid, "condition", progress, log=False)
        parent_frames = None
        if ctx.parent is not None and ctx.parent.last_frame_path:
            parent_frames = read_last_frames(Path(ctx.parent.last_frame_path).parent, cfg.extension_frames)
        plan = plan_conditioning(
            spec, ctx.transition, memories, parent_frames, params=ConditioningParams.from_config(cfg),
            names={c.id: c.name for c in ctx.characters}, base_dir=self._reference_root())
        timings["condition_s"] = time.perf_counter() - t

        existing = {tk.take: tk for tk in self.store.takes(sid)}
        numbers = self._take_numbers(scene, existing, takes, prompt, plan.records)
        prior = {c.id: [a for a in memories.get(c.id, [])] for c in ctx.characters}
        outcomes: list[TakeOutcome] = []
        parent_last = parent_frames[-1] if parent_frames else None
        for n in numbers:
            if n in existing:  # committed before a crash: never made twice
                outcomes.append(TakeOutcome(existing[n], None))
                continue
            seed = self._seed(spec, n)
            t = time.perf_counter()
            self._stage(sid, "generate", progress, take=n, seed=seed)
            crash_point("before_generate")
            request = GenerationRequest(
                prompt=prompt, negative_prompt=spec.negative_prompt or "", width=spec.width, height=spec.height,
                frames=spec.frames, fps=spec.fps, seed=seed, steps=spec.steps, guidance=spec.guidance,
                conditions=plan.conditions)
            result = self.generator.generate(request)
            take_dir = self.dir / "media" / sid / f"take-{n}"
            # samples=0: the observer samples the frames in memory and writes the ones memory points at
            media = write_take(take_dir, result, fps=spec.fps, last_n=cfg.extension_frames, samples=0)
            timings[f"generate_s_take{n}"] = time.perf_counter() - t
            crash_point("after_generate")

            t = time.perf_counter()
            self._stage(sid, "observe", progress, take=n)
            obs = self.observer.observe(
                result.frames, scene_id=sid, prompt=prompt,
                characters=[CharacterMemory(c, reference=references.get(c.id),
                                            prior=[cand.appearance for cand in prior.get(c.id, [])])
                            for c in ctx.characters],
                parent_last_frame=parent_last, media_dir=take_dir, clock=scene.clock,
                branch=scene.placement.branch, pos=scene.placement.pos, take=n)
            timings[f"observe_s_take{n}"] = time.perf_counter() - t
            take = TakeRecord(sid, n, seed, prompt, str(media.video_path), str(media.last_frame_path),
                              str(take_dir), obs.scores, request_key=self._request_key(spec, n, prompt, plan.records))
            notes = list(result.attempts)
            outcomes.append(TakeOutcome(take, SceneCommit(take, obs.appearances, plan.records), {"attempts": notes}))

        best = max(outcomes, key=lambda o: self._take_score(o.take))
        self._stage(sid, "commit", progress, take=best.take.take)
        for o in outcomes:
            if o.commit is None:
                continue
            for line in o.timings.get("attempts", []):
                self.store.set_scene_status(sid, "generating", note=f"take {o.take.take}: {line}")
        for o in sorted(outcomes, key=lambda o: o is best):  # the chosen take last, so it ends "done"
            if o.commit is None:  # committed before an interruption
                if o is best:
                    self.store.choose_take(sid, o.take.take,
                                           self._reinforcements(plan.records, o.take, scene.clock))
                continue
            o.commit.choose = o is best
            if o is best:
                o.commit.reinforcements = self._reinforcements(plan.records, o.take, scene.clock)
            self.store.commit_take(o.commit)
        crash_point("after_commit")
        self._index_scene(sid)
        self.store.append_event("scene.done", sid, {"take": best.take.take, "scores": best.take.scores.as_dict()})
        return [o.take for o in outcomes]

    @staticmethod
    def _seed(spec: SceneSpec, take: int) -> int:
        return int(spec.seed or 0) + take

    def _request_key(self, spec: SceneSpec, take: int, prompt: str, records) -> str:
        import hashlib

        what = [prompt, spec.negative_prompt, spec.width, spec.height, spec.frames, spec.fps, spec.steps,
                spec.guidance, self._seed(spec, take),
                [(r.role, r.target_kind, r.target_id, r.frame_index, r.strength) for r in records]]
        return hashlib.sha1(json.dumps(what, default=str).encode()).hexdigest()

    def _take_numbers(self, scene: SceneRecord, existing: dict, takes: int, prompt: str, records) -> list[int]:
        """Take numbers to produce. A committed take made from exactly this request (prompt, size, steps,
        seed, conditions) is what this run would make again, so it is reused — a resumed run; one made from an
        older spec keeps its number and the new take gets the next."""
        n = max(existing) + 1 if scene.status == "done" and existing else 0
        out = []
        while len(out) < takes:
            old = existing.get(n)
            if old is None or old.request_key == self._request_key(scene.spec, n, prompt, records):
                out.append(n)
            n += 1
        return out

    def _retrieve(self, ctx) -> tuple[dict, dict]:
        """Per character: ranked prior appearances on this timeline, and its reference embedding (if any)."""
        memories: dict[str, list[Candidate]] = {}
        references: dict = {}
        chars = ctx.characters
        if not chars:
            return memories, references
        texts = [retrieval_text(ctx.scene.spec, c, ctx.environment) for c in chars]
        text_emb = self.encoders.embed_text(texts)
        ref_paths = {c.id: self._reference_path(c.reference_path) for c in chars if c.reference_path}
        if ref_paths:
            from PIL import Image
            import numpy as np

            imgs = [np.asarray(Image.open(p).convert("RGB")) for p in ref_paths.values()]
            embs = self.encoders.embed_dino_images(imgs)
            references = dict(zip(ref_paths, embs))
        for c, q in zip(chars, text_emb):
            memories[c.id] = self.retriever.nearest_prior_appearances(
                ctx.scene, c.id, self.config.engine.retrieve_k, text_query=q, identity_ref=references.get(c.id),
                tau_character=c.decay_tau)
        return memories, references

    def _reference_path(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else Path(self._reference_root()) / p)

    def _take_score(self, take: TakeRecord) -> float:
        s = take.scores
        by = self.config.engine.best_take_by
        if by == "mean":
            vals = [v for v in (s.identity, s.text_alignment, s.transition_smoothness) if v is not None]
            return sum(vals) / len(vals) if vals else 0.0
        v = getattr(s, by, None)
        return float(v) if v is not None else float("-inf")

    def _reinforcements(self, records: Sequence[ConditionRecord], take: TakeRecord, clock: float) -> list:
        """Memories used as keyframes gain strength when the take kept identity, lose it when it drifted."""
        used = [r.target_id for r in records if r.target_kind == "Appearance"]
        if not used:
            return []
        out = []
        for a in self.store.appearances(ids=used, with_vectors=False):
            identity = take.scores.identity_by_character.get(a.character_id)
            if identity is None:
                continue
            strength, reinforced_clock = memory.update_strength(a.strength, a.reinforced_clock, identity, clock,
                                                                self.config.memory)
            out.append((a.id, strength, reinforced_clock))
        return out

    def _index_scene(self, scene_id: str) -> None:
        """Bring the in-memory vector indexes in line with the graph for one scene (its accepted appearances).

        The files are saved every ``index_save_every`` scenes and on close, not after every scene: saving
        rewrites a character's whole partition, and the graph is the source of truth — on open, whatever
        the saved index lacks is added back from it.
        """
        apps = self.store.appearances(scene_id=scene_id, with_vectors=True, accepted_only=False)
        keep = [a for a in apps if a.accepted]
        drop = [a.id for a in apps if not a.accepted]
        for index in self.indexes().values():
            index.remove(drop)
            index.add(keep)
        self._unsaved += 1
        if self._unsaved >= max(1, self.config.engine.index_save_every):
            self.save_index()
        crash_point("after_index")

    def save_index(self) -> None:
        """Write the vector indexes to ``<story dir>/vectors`` now."""
        if self._indexes is not None:
            for index in self._indexes.values():
                index.save()
        self._unsaved = 0

    def choose_take(self, scene_id: str, take: int) -> None:
        with self._exclusive():
            self.store.choose_take(scene_id, take)
            self._index_scene(scene_id)
