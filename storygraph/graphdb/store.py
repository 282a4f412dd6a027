"""The StoryStore protocol: every story-level operation the engine and the viewer need from a graph.

Backends (``embedded.py`` for LadybugDB, ``neo4j.py`` for Neo4j) implement it with the named queries
of ``storygraph/cypher``. Records returned here are plain dataclasses; nothing database-specific leaks.

Stories per graph: an embedded graph (a story folder) holds exactly one story — loading a second one into it is
refused with :class:`StoreConflict`, since its tables are keyed on ids alone; a Neo4j graph keys everything on
``(story_id, id)`` and holds any number, a store reading and writing the one named by ``story_id``.

Edits ripple: every operation that changes what a generated scene was made from (its spec, its place on a
timeline, its cast's or place's description or reference, the take chosen upstream, a deletion) marks the scenes
made from it ``stale`` in the same transaction (see :mod:`storygraph.ripple`) and returns what it marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

from ..domain import (
    Appearance, Character, ConditionRecord, Environment, Event, GenerationDefaults, MemoryParams, Placement, SceneSpec,
    Scores, Story,
)
from ..errors import Conflict, InvalidInput, NotFound, Refused, StorygraphError, Unavailable


class StoreError(StorygraphError, RuntimeError):
    """A graph operation failed. Backends raise nothing else: a database's own errors are wrapped in one of
    the subclasses below where they cross into storygraph."""


class RecordNotFound(StoreError, NotFound):
    """The story, scene or take named is not in the graph."""


class StoreConflict(StoreError, Conflict):
    """The graph's state does not allow the operation (bound to another story)."""


class DuplicateRecord(StoreConflict):
    """A primary key that is taken already."""


class StoreInputError(StoreError, InvalidInput):
    """A value the graph does not take (an unknown status or kind), or a request it cannot resolve."""


class GraphUnavailable(StoreError, Unavailable):
    """The database cannot be had: opened for writing by another process, or unreachable."""


class ReadOnlyViolation(StoreError, Refused):
    """A query given to ``query(..., read_only=True)`` would write."""


class QueryError(StoreError, InvalidInput):
    """A user query could not be parsed or run."""


class StoryLocked(GraphUnavailable):
    """The embedded story is open for writing in another process (LadybugDB allows one writer)."""

    def __init__(self, db_path, pid=None):
        self.db_path = db_path
        self.pid = pid
        who = f"process {pid}{_command_of(pid)}" if pid else "another process"
        super().__init__(f"{db_path} is open for writing in {who}; LadybugDB allows one writer — run the viewer "
                         "and the engine in one process (storygraph studio) or use Neo4j")


def _command_of(pid) -> str:
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            words = [w.decode("utf-8", "replace") for w in f.read().split(b"\0") if w]
    except (OSError, ValueError):
        return ""
    return f" ({' '.join(words)[:120]})" if words else ""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False  # more rows matched than were fetched (console queries stop at their row limit)

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]


@dataclass
class SceneRecord:
    """A scene as the graph holds it: the author's spec, its placement in story time, and its outcome."""

    spec: SceneSpec
    placement: Placement
    status: str = "planned"
    prompt: Optional[str] = None
    seed: Optional[int] = None
    video_path: Optional[str] = None
    last_frame_path: Optional[str] = None
    frames_dir: Optional[str] = None
    scores: Scores = field(default_factory=Scores)
    chosen_take: Optional[int] = None
    takes: int = 0
    notes: str = ""  # retries and failures, one per line
    stale_reason: str = ""  # why its media no longer matches what it should be made from ("" when it does)
    stale_from: str = ""  # the scene that change came from

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def clock(self) -> float:
        return self.placement.clock


@dataclass
class TransitionRecord:
    from_id: str
    to_id: str
    kind: str
    gap: float
    decay: float

    @property
    def effective_gap(self) -> float:  # the stored gap is already resolved
        return self.gap


@dataclass
class SceneContext:
    """What the engine reads before generating a scene."""

    scene: SceneRecord
    characters: list[Character]
    environment: Optional[Environment]
    parent: Optional[SceneRecord]
    transition: Optional[TransitionRecord]


@dataclass
class TakeRecord:
    scene_id: str
    take: int
    seed: int
    prompt: str
    video_path: str
    last_frame_path: str
    frames_dir: str
    scores: Scores
    chosen: bool = False
    request_key: str = ""  # fingerprint of everything the take was generated from (prompt, size, seed, conditions)


@dataclass
class SceneCommit:
    """Everything one generated take writes, in one transaction."""

    take: TakeRecord
    appearances: list[Appearance]
    conditioned_on: list[ConditionRecord]
    # the take continues the timeline: scene gets its media and scores, status done
    choose: bool = True


@dataclass
class LoadSummary:
    characters: int
    environments: int
    scenes: int
    transitions: int
    created: dict = field(default_factory=dict)  # label -> how many nodes were new
    changes: dict = field(default_factory=dict)  # what differed from the graph (``StoryChanges.summary()``)
    stale: dict = field(default_factory=dict)  # scene id -> why it is stale now (scenes marked by this load)


@runtime_checkable
class StoryStore(Protocol):
    """Everything the engine, the viewer and the CLI use of a graph; nothing else of a backend is reached for."""

    backend: str  # "ladybug" | "neo4j"
    multi_story: bool  # whether the graph can hold several stories (Neo4j) or exactly one (an embedded folder)
    story_id: Optional[str]  # the story this store reads and writes (bound on first use when the graph holds one)
    memory: MemoryParams  # the constants the store applies on load (transition decay, a new APPEARS_IN's strength)

    def setup_schema(self) -> None: ...
    def close(self) -> None: ...

    # -- story structure -------------------------------------------------------------------------
    def load_story(self, story: Story) -> LoadSummary:
        """Write a whole story in one transaction: what differs from the graph is applied and the scenes it makes
        stale are marked (loading the same story twice changes nothing). Scenes the graph has and the story does
        not are kept (``changes["missing"]``). An embedded graph holding another story refuses it (StoreConflict)."""
    def stories(self) -> list[dict]:
        """``{id, title, ...}`` of every story in the graph."""
    def story_meta(self) -> Optional[dict]: ...
    def defaults(self) -> GenerationDefaults:
        """The story's generation defaults (from its story file)."""
    def upsert_character(self, character: Character) -> dict:
        """Add or change a character; scenes showing it (and made from those) are stale when it changed.
        Returns ``{scene id: reason}`` of the scenes it marked stale."""
    def upsert_environment(self, environment: Environment) -> dict: ...
    def upsert_scene(self, spec: SceneSpec, placement: Placement) -> None:
        """Write a scene as given (a new scene; edits of generated ones go through ``update_scene``)."""
    def update_scene(self, spec: SceneSpec) -> dict:
        """Change a scene's spec: a generated scene becomes stale, with what it was made from downstream; one with
        no media goes back to planned. Returns ``{scene id: reason}`` of the scenes it marked stale."""
    def upsert_transition(self, transition: TransitionRecord) -> None: ...
    def ids(self, kind: str) -> list[str]: ...  # kind: character | environment | scene
    def set_timeline(self, upsert: Sequence[TransitionRecord] = (), delete: Sequence[tuple[str, str]] = (),
                     placements: Mapping[str, Placement] = {}, changed: Mapping[str, Any] = {}) -> dict:
        """In one transaction: upsert transitions (each replacing any other incoming one of its scene), delete
        ``(from, to)`` transitions, write new placements (scenes and their appearances) and mark ``changed``
        (scene id -> ``ripple.Cause``) and what was made from them stale. Returns the marks."""
    def delete_scenes(self, ids: Sequence[str], placements: Mapping[str, Placement] = {}) -> dict:
        """Delete scenes with their takes, appearances and provenance; scenes made from them are marked stale and
        the remaining scenes get ``placements``. Returns ``{scene id: reason}`` of the scenes marked stale."""
    def mark_stale(self, changed: Mapping[str, Any]) -> dict:
        """Mark ``changed`` (scene id -> ``ripple.Cause``) and what was made from them stale."""
    def stale_dependencies(self, from_clock: Optional[float] = None) -> list[dict]:
        """The rows of ``stale_dependencies.cypher``: every generated scene (at or after ``from_clock``) with what
        its chosen take was made from."""
    def mark_interrupted(self) -> list[str]:
        """Scenes left ``generating`` by a process that is gone become ``interrupted``; returns their ids."""
    def migrate_media_paths(self, story_dir) -> int:
        """Rewrite absolute media paths (an older story, or a folder moved since) relative to ``story_dir``."""
    def characters(self) -> list[Character]: ...
    def environments(self) -> list[Environment]: ...
    def transitions(self) -> list[TransitionRecord]: ...

    # -- scenes ----------------------------------------------------------------------------------
    def scene(self, scene_id: str) -> Optional[SceneRecord]: ...
    def scenes(self, status: Optional[str] = None) -> list[SceneRecord]:
        """All scenes (or those with ``status``), parents before children."""
    def scene_context(self, scene_id: str) -> SceneContext: ...
    def set_scene_status(self, scene_id: str, status: str, note: Optional[str] = None) -> int:
        """Set status (and append ``note`` to the scene's notes); returns the Event seq it wrote."""

    # -- memory ----------------------------------------------------------------------------------
    def commit_take(self, commit: SceneCommit) -> int:
        """Write a generated take in one transaction; returns the Event seq. Idempotent per (scene, take)."""
    def choose_take(self, scene_id: str, take: int) -> int:
        """Make ``take`` the one that continues the timeline; scenes made from the take it replaces are stale."""
    def takes(self, scene_id: str) -> list[TakeRecord]: ...
    def appearances(self, ids: Optional[Iterable[str]] = None, character_id: Optional[str] = None,
                    accepted_only: bool = True, with_vectors: bool = True,
                    scene_id: Optional[str] = None) -> list[Appearance]: ...
    def appearance_keys(self) -> Iterator[tuple[str, str]]:
        """(appearance id, character id) of every accepted appearance: what the vector index must hold."""
    def appearance_arrays(self, ids: Optional[Iterable[str]] = None, spaces: Iterable[str] = ("clip", "dino"),
                          batch: int = 2000) -> Iterator[dict]:
        """Accepted appearances (all, or those of ``ids``) in batches of columns, what vector indexes are built
        from: ``id``, ``character_id``, ``branch`` (lists), ``pos``, ``clock`` (arrays) and, per space in
        ``spaces``, an (n, dim) float32 matrix."""
    def conditioned_on(self, scene_id: str, take: Optional[int] = None) -> list[ConditionRecord]:
        """Provenance of the scene's chosen take (or of ``take``)."""
    def scene_placements(self, ids: Iterable[str]) -> dict:
        """``scene id -> (clock, branch, pos)``: where the scenes that used a memory (``Appearance.uses``) sit now."""
    def index_memory(self) -> int:
        """Rebuild every ``Appearance.uses`` from the ``CONDITIONED_ON`` edges of chosen takes."""
    def memory_indexed(self) -> bool:
        """Whether the story keeps ``Appearance.uses`` (older stories are indexed once, when an engine opens them)."""

    # -- deleting --------------------------------------------------------------------------------
    def scene_children(self, scene_id: str) -> list[str]:
        """Ids of the scenes that follow this one directly."""

    # -- events ----------------------------------------------------------------------------------
    def append_event(self, kind: str, ref_id: str, payload: Optional[dict] = None) -> int: ...
    def append_events(self, events) -> int:
        """Several (kind, ref_id, payload) events in one transaction; returns the last seq."""
    def events_since(self, seq: int, limit: int = 1000) -> list[Event]: ...
    def last_event_seq(self) -> int: ...

    # -- Cypher ----------------------------------------------------------------------------------
    def query(self, cypher: str, params: Optional[dict] = None, read_only: bool = True,
              timeout_s: Optional[float] = None, max_rows: Optional[int] = None) -> QueryResult:
        """User-written Cypher; read-only (the default) passes both console guards (see ``readonly.py``)."""
