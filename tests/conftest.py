"""Shared fixtures: the example story, a store for every backend the contract suite can reach, and tiny
random-weight models (CLIP, DINOv2, LTX-2) built once per test run. Plain helpers live in ``support.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import EXAMPLE

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


# -- stores -------------------------------------------------------------------------------------------------
@pytest.fixture(params=_backends())
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, tmp_path):
    """``make_store(name)``: a new, empty store of this test's backend (closed after the test)."""
    made = []

    def make(name: str = "story", story_id: str | None = None):
        if backend == "ladybug":
            from storygraph.graphdb.embedded import EmbeddedStore

            s = EmbeddedStore(tmp_path / name, story_id=story_id)
        else:
            from storygraph.graphdb.neo4j import Neo4jStore

            s = Neo4jStore(os.environ["STORYGRAPH_TEST_NEO4J_URI"], story_id=story_id)
            # each store starts from an empty graph: the contract suite owns this Neo4j instance
            s._write_query("MATCH (n) DETACH DELETE n", {})
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


# -- engines ------------------------------------------------------------------------------------------------
@pytest.fixture
def make_engine(tmp_path, tiny_config, tiny_runtime):
    """``make_engine((scene ids, transitions), **config overrides)``: a StoryEngine on a new folder with the shared
    tiny models and that cut of the example story loaded (closed after the test)."""
    from support import harbor_story, new_engine

    engines = []

    def make(shape, **config_overrides):
        scenes, transitions = shape
        e = new_engine(tmp_path / f"story{len(engines)}", tiny_config, tiny_runtime,
                       harbor_story(scenes, transitions), **config_overrides)
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.close()


# -- tiny models ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """``{"clip": folder, "dino": folder}`` holding tiny random-weight models saved with save_pretrained."""
    from storygraph.engine.tiny.encoders import make_encoders

    return make_encoders(tmp_path_factory.mktemp("tiny-encoders"))


@pytest.fixture(scope="session")
def tiny_encoders(tiny_model_dirs):
    """An ``Encoders`` on the CPU loaded from the tiny folders."""
    from storygraph.engine.encoders import Encoders

    return Encoders.from_pretrained(tiny_model_dirs["clip"], tiny_model_dirs["dino"], device="cpu", batch_size=8)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """A ``Config`` whose models are tiny random-weight CLIP, DINOv2 and LTX-2 folders (built once)."""
    from storygraph.engine.demo import prepare

    return prepare(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_runtime(tiny_config):
    """The tiny generator and encoders loaded once through ``from_pretrained``, shared by in-process engines."""
    from storygraph.engine.encoders import Encoders
    from storygraph.engine.generators.ltx2 import LTX2Generator

    m = tiny_config.models
    return {"generator": LTX2Generator.from_pretrained(m.ltx2, device="cpu"),
            "encoders": Encoders.from_pretrained(clip=m.clip, dino=m.dino, device="cpu")}
