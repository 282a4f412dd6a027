"""Shared fixtures: the example story, and a store for every backend the contract suite can reach."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _backends():
    out = ["ladybug"]
    if os.environ.get("STORYGRAPH_TEST_NEO4J_URI"):
        out.append("neo4j")
    return out


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE


@pytest.fixture
def example_story():
    from storygraph.storyfile import load_story

    return load_story(EXAMPLE)


def make_store(backend: str, tmp_path: Path, story_id: str | None = None):
    if backend == "ladybug":
        from storygraph.graphdb.embedded import EmbeddedStore

        return EmbeddedStore(tmp_path / "story", story_id=story_id)
    from storygraph.graphdb.neo4j import Neo4jStore

    store = Neo4jStore(os.environ["STORYGRAPH_TEST_NEO4J_URI"], story_id=story_id)
    # each test gets an empty graph: the contract suite owns this Neo4j instance
    store._write_query("MATCH (n) DETACH DELETE n", {})
    return store


@pytest.fixture(params=_backends())
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend, tmp_path):
    s = make_store(backend, tmp_path)
    yield s
    s.close()
