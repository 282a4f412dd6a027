"""The StoryStore protocol: every story-level operation the engine and the viewer need from a graph.

Backends (``embedded.py`` for LadybugDB, ``neo4j.py`` for Neo4j) implement it with the named queries
of ``storygraph/cypher``. Records returned here are plain dataclasses; nothing database-specific leaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Protocol, runtime_checkable

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
    # (appearance id, new strength, new reinforced clock) for memories this take used
    reinforcements: list[tuple[str, float, float]] = field(default_factory=list)
    # the take continues the timeline: scene gets its media and scores, status done
    choose: bool = True


@dataclass
class LoadSummary:
    characters: int
    environments: int
    scenes: int
    transitions: int
    created: dict = field(default_factory=dict)  # label -> how many nodes were new


@runtime_checkable
class StoryStore(Protocol):
    """Everything the engine, the viewer and the CLI use of a graph; nothing else of a backend is reached for."""

    backend: str  # "ladybug" | "neo4j"
    story_id: Optional[str]  # the story this store reads and writes (bound on first use when the graph holds one)
    memory: MemoryParams  # the constants the store applies on load (transition decay, a new APPEARS_IN's strength)

    def setup_schema(self) -> None: ...
    def close(self) -> None: ...

    # -- story structure -------------------------------------------------------------------------
    def load_story(self, story: Story) -> LoadSummary:
        """Write a whole story (idempotent: loading it twice changes nothing) in one transaction."""
    def stories(self) -> list[dict]:
        """``{id, title, ...}`` of every story in the graph."""
    def story_meta(self) -> Optional[dict]: ...
    def defaults(self) -> GenerationDefaults:
        """The story's generation defaults (from its story file)."""
    def upsert_character(self, character: Character) -> None: ...
    def upsert_environment(self, environment: Environment) -> None: ...
    def upsert_scene(self, spec: SceneSpec, placement: Placement) -> None: ...
    def upsert_transition(self, transition: TransitionRecord) -> None: ...
    def ids(self, kind: str) -> list[str]: ...  # kind: character | environment | scene
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
    def choose_take(self, scene_id: str, take: int, reinforcements=()) -> int: ...
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

    # -- deleting --------------------------------------------------------------------------------
    def scene_children(self, scene_id: str) -> list[str]:
        """Ids of the scenes that follow this one directly."""
    def scene_dependents(self, scene_id: str) -> list[str]:
        """Other scenes whose takes were conditioned on this scene or on one of its appearances."""
    def delete_scene(self, scene_id: str, placements=()) -> list[str]:
        """Remove a scene, its takes and appearances (and write ``placements`` of scenes it cut loose) in one
        transaction; returns the removed appearance ids."""
    def delete_transition(self, from_id: str, to_id: str, placements=()) -> int:
        """Remove one transition (and write ``placements`` of the scenes it cut loose) in one transaction."""

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
