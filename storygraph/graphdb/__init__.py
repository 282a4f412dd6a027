"""The only code that talks to a graph database: the StoryStore protocol and its two backends."""

from __future__ import annotations

from typing import Optional

from .store import (
    LoadSummary, QueryError, QueryResult, ReadOnlyViolation, SceneCommit, SceneContext, SceneRecord, StoreError,
    StoryLocked, StoryStore, TakeRecord, TransitionRecord,
)


def open_store(graph, story: Optional[str] = None, *, database: Optional[str] = None, memory=None,
               read_only: bool = False, create: bool = True) -> StoryStore:
    """A store for ``graph``: a ``neo4j://``/``bolt://`` URI, or a story folder for the embedded database."""
    from .neo4j import Neo4jStore, is_neo4j_uri

    if is_neo4j_uri(str(graph)):
        return Neo4jStore(str(graph), story_id=story, memory=memory, database=database)
    from .embedded import EmbeddedStore

    return EmbeddedStore(graph, story_id=story, memory=memory, read_only=read_only, create=create)


__all__ = [
    "open_store", "StoryStore", "StoreError", "StoryLocked", "ReadOnlyViolation", "QueryError", "QueryResult", "SceneCommit",
    "SceneContext", "SceneRecord", "TakeRecord", "TransitionRecord", "LoadSummary",
]
