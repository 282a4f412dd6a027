"""Read-only queries refuse every write shape, on every backend, and leave the graph unchanged."""

from __future__ import annotations

import pytest

from storygraph.graphdb import ReadOnlyViolation
from storygraph.graphdb.readonly import check_read_only

WRITES = [
    "CREATE (:Scene {id: 'x', story_id: 'harbor-night'})",
    "MERGE (s:Scene {id: 'x'})",
    "MATCH (s:Scene) SET s.status = 'done'",
    "MATCH (s:Scene) REMOVE s.status",
    "MATCH (s:Scene) DELETE s",
    "MATCH (s:Scene) DETACH DELETE s",
    "MATCH (s:Scene) WITH s LIMIT 1 SET s.title = 'x'",
    "MATCH (s:Scene) WITH s WHERE s.clock > 1 DETACH DELETE s",
    "MATCH (s:Scene) WITH collect(s) AS ss FOREACH (x IN ss | SET x.status = 'x')",
    "CALL { CREATE (:Scene {id: 'y'}) } RETURN 1",
    "MATCH (s:Scene) CALL { WITH s SET s.title = 'x' } RETURN count(*)",
    "MATCH (s:Scene) RETURN s.id; CREATE (:Scene {id: 'z'})",
    "MATCH (s:Scene) RETURN s.id; COMMIT; CREATE (:Scene {id: 'z'})",
    "// just a comment\nCREATE (:Scene {id: 'c'})",
    "/* MATCH (n) RETURN n */ CREATE (:Scene {id: 'c'})",
    "MATCH (n) RETURN n /* comment */ ; MATCH (s:Scene) DELETE s",
    "CREATE NODE TABLE Extra(id STRING, PRIMARY KEY(id))",
    "CREATE CONSTRAINT c IF NOT EXISTS FOR (n:Scene) REQUIRE n.x IS UNIQUE",
    "DROP TABLE Scene",
    "DROP INDEX scene_status",
    "ALTER TABLE Scene ADD extra STRING",
    "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row",
    "LOAD FROM '/etc/passwd' RETURN *",
    "COPY Scene FROM '/tmp/scenes.csv'",
    "EXPORT DATABASE '/tmp/stolen'",
    "BEGIN TRANSACTION",
    "UNWIND [1, 2] AS i MERGE (:Scene {id: toString(i)})",
    "MATCH (a:Scene), (b:Scene) CREATE (a)-[:NEXT {kind: 'cut'}]->(b)",
    "match (s:Scene) set s.status = 'lowercase'",
    "CALL threads = 1",
]

READS = [
    "MATCH (s:Scene) RETURN s.id AS id ORDER BY id",
    "MATCH (s:Scene) WHERE s.title = 'CREATE' RETURN count(s) AS n",
    "MATCH (s:Scene) RETURN s.id AS id // DELETE in a comment\nORDER BY id",
    "MATCH (s:Scene) RETURN s.id AS id;",
    "MATCH (c:Character)-[:APPEARS_IN]->(s:Scene) RETURN c.name AS name, count(s) AS n ORDER BY name",
]


def test_enough_write_shapes():
    assert len(WRITES) >= 20


@pytest.mark.parametrize("cypher", WRITES)
def test_lexical_guard_refuses(cypher):
    with pytest.raises(ReadOnlyViolation):
        check_read_only(cypher)


@pytest.mark.parametrize("cypher", READS)
def test_lexical_guard_allows_reads(cypher):
    check_read_only(cypher)


def _snapshot(store):
    return store._counts(), [(s.id, s.status, s.spec.title) for s in store.scenes()], len(store.transitions())


def test_every_write_refused_and_graph_unchanged(store, example_story):
    store.load_story(example_story)
    before = _snapshot(store)
    for cypher in WRITES:
        with pytest.raises(ReadOnlyViolation):
            store.query(cypher, read_only=True)
    assert _snapshot(store) == before


def test_backend_layer_refuses_writes_without_lexical_guard(store, example_story):
    """The database's own read-only mode stops a write even if the lexical check were bypassed."""
    store.load_story(example_story)
    before = _snapshot(store)
    for cypher in ["CREATE (:Scene {id: 'x', story_id: 'harbor-night'})", "MATCH (s:Scene) SET s.status = 'x'",
                   "MATCH (s:Scene) DETACH DELETE s"]:
        with pytest.raises(ReadOnlyViolation):
            store._user_query(cypher, {}, None)
    assert _snapshot(store) == before


def test_reads_answer(store, example_story):
    store.load_story(example_story)
    rows = store.query("MATCH (s:Scene) RETURN s.id AS id ORDER BY id").rows
    assert [r[0] for r in rows] == sorted(s.id for s in example_story.scenes)
    n = store.query("MATCH (s:Scene) WHERE s.id = $id RETURN count(s) AS n", {"id": example_story.scenes[0].id}).rows
    assert n == [[1]]


def test_parameters_are_not_code(store, example_story):
    store.load_story(example_story)
    evil = "x'}) DETACH DELETE s //"
    rows = store.query("MATCH (s:Scene) WHERE s.id = $id RETURN count(s) AS n", {"id": evil}).rows
    assert rows == [[0]]
    assert len(store.scenes()) == len(example_story.scenes)
