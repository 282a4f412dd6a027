"""The Cypher files agree with the one declaration of generation settings and scores (storygraph.domain).

The .cypher files keep their text (every Cypher string lives in one), so a new setting or score is added to the
declaration and to the files that name graph properties; this test says which file lacks what.
"""

from __future__ import annotations

import re

import pytest

from storygraph.domain import GenerationDefaults, SceneSpec, Scores, generation_settings
from storygraph.engine.generators.base import GenerationRequest
from storygraph.graphdb import queries

LADYBUG_TYPES = {int: "INT64", float: "DOUBLE", str: "STRING"}
SETTINGS = [(name, kind) for name, kind, _ in generation_settings()]


def _table_columns(table: str) -> dict[str, str]:
    schema = queries.load("schema", "ladybug")
    m = re.search(rf"CREATE NODE TABLE IF NOT EXISTS {table}\((.*?)\);", schema + ";", re.S)
    assert m, f"ladybug/schema.cypher has no {table} table"
    return dict(part.strip().split()[:2] for part in m.group(1).split(",") if not part.strip().startswith("PRIMARY"))


@pytest.mark.parametrize("dialect", queries.DIALECTS)
def test_scenes_upsert_sets_every_generation_setting(dialect):
    text = queries.load("scenes_upsert", dialect)
    missing = [n for n, _ in SETTINGS if not re.search(rf"s\.{n} = (CAST\()?r\.{n}\b", text)]
    assert not missing, f"scenes_upsert ({dialect}) does not set {missing}"


@pytest.mark.parametrize("dialect", queries.DIALECTS)
def test_scenes_create_sets_what_the_upsert_sets(dialect):
    """A new scene is created whole (scenes_create), an existing one updated (scenes_upsert): the same properties."""
    upsert, create = queries.load("scenes_upsert", dialect), queries.load("scenes_create", dialect)
    updated = set(re.findall(r"s\.(\w+) = (?:CAST\()?r\.\1\b", upsert))
    created = set(re.findall(r"\b(\w+): (?:CAST\()?r\.\1\b", create))
    assert updated and created == updated | {"id"}, (sorted(created ^ (updated | {"id"})))


def test_ladybug_schema_has_every_setting_and_score():
    scene, take = _table_columns("Scene"), _table_columns("Take")
    for name, kind in SETTINGS:
        assert scene.get(name) == LADYBUG_TYPES[kind], f"Scene.{name} should be {LADYBUG_TYPES[kind]}"
    for name in Scores.names():
        assert scene.get(name) == "DOUBLE", f"Scene.{name} should be DOUBLE"
        assert take.get(name) == "DOUBLE", f"Take.{name} should be DOUBLE"


@pytest.mark.parametrize("dialect", queries.DIALECTS)
def test_takes_store_and_scenes_copy_every_score(dialect):
    create, choose = queries.load("take_create", dialect), queries.load("scene_choose_take", dialect)
    for name in Scores.names():
        assert re.search(rf"\b{name}: \${name}\b", create), f"take_create ({dialect}) does not store {name}"
        assert re.search(rf"s\.{name} = t\.{name}\b", choose), f"scene_choose_take ({dialect}) does not copy {name}"


def test_specs_and_requests_carry_every_setting():
    for name, _ in SETTINGS:
        assert SceneSpec.__dataclass_fields__[name].default is None
        assert GenerationRequest.__dataclass_fields__[name].default == getattr(GenerationDefaults(), name)


def test_the_settings_file_is_written_from_the_declarations():
    """``storygraph init``'s storygraph.toml: every key of every section, each under its help line, and it reads
    back as the defaults; a value outside a declared choice is refused."""
    import tomllib
    from dataclasses import fields

    from storygraph.config import Config, ConfigError

    text = Config().to_toml()
    assert Config.from_dict(tomllib.loads(text)) == Config()
    lines = text.splitlines()
    for section in fields(Config):
        for f in fields(getattr(Config(), section.name)):
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{f.name} = "))
            assert lines[at - 1] == f"# {f.metadata['setting'].help}", f.name
    with pytest.raises(ConfigError, match="best_take_by must be one of"):
        Config.from_dict({"engine": {"best_take_by": "speed"}})
