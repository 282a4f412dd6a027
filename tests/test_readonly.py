"""Console Cypher cannot be talked past: each guard alone stops every class of attack, and so do both together.

For every attack the checks are the same: the graph's full dump is unchanged, no file appeared, the planted
secret file's content never comes back (in rows or in an error), and the process still answers.
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from storygraph.graphdb import QueryError, ReadOnlyViolation
from storygraph.graphdb.console import ConsoleLimits
from storygraph.graphdb.readonly import MAX_DEPTH, MAX_QUERY_CHARS, check_read_only

SECRET = "s3cr3t-planted-line-7f1d"

# (name, query) — {secret} is a planted file's path, {out} a path where nothing may appear, {outdir} a folder
ATTACKS = [
    # comment / string / escape / backquote: where does a token end?
    ("comment-star-star", "/* **/ RETURN ' */ COMMIT; MATCH (x:Scene) DETACH DELETE x"),
    ("comment-star-star-dq", '/* **/ RETURN " */ COMMIT; MATCH (x:Scene) DETACH DELETE x //'),
    ("comment-slash-star-slash", "/*/ RETURN 1 /*/ MATCH (x:Scene) DETACH DELETE x"),
    ("comment-nested", "/* /* */ RETURN 1 */ MATCH (x:Scene) DETACH DELETE x"),
    ("line-comment-cr", "MATCH (s:Scene) RETURN s // x\rMATCH (x:Scene) DETACH DELETE x"),
    ("line-comment-ls", "RETURN 1 // x\u2028MATCH (x:Scene) DETACH DELETE x"),
    ("comment-hides-write", "/* MATCH (n) RETURN n */ CREATE (:Scene {id: 'c', story_id: 'harbor-night'})"),
    ("string-backslash-end", "RETURN 'a\\\\' ; MATCH (x:Scene) DETACH DELETE x ; RETURN '"),
    ("string-backslash-end-dq", 'RETURN "a\\\\" ; MATCH (x:Scene) DETACH DELETE x ; RETURN "'),
    ("string-doubled-quote", "RETURN 'a'' ; MATCH (x:Scene) DETACH DELETE x ; RETURN ''"),
    ("string-hex-escape", "RETURN '\\x27; MATCH (x:Scene) DETACH DELETE x; RETURN \\x27'"),
    ("string-unicode-escape", "RETURN '\\u0027'; MATCH (x:Scene) DETACH DELETE x"),
    ("backquote-doubled", "MATCH (`a``) DETACH DELETE x //`) RETURN 1"),
    ("backquote-hides-semicolon", "MATCH (s:`Scene; MATCH (x) DETACH DELETE x`) RETURN s"),
    # statement splits and transactions
    ("semicolon-write", "MATCH (s:Scene) RETURN s.id; CREATE (:Scene {id: 'z', story_id: 'harbor-night'})"),
    ("commit-split", "MATCH (s:Scene) RETURN s.id; COMMIT; MATCH (x:Scene) DETACH DELETE x"),
    ("begin", "BEGIN TRANSACTION; MATCH (x:Scene) SET x.title = 'z'; COMMIT"),
    ("rollback", "ROLLBACK"),
    ("checkpoint", "CHECKPOINT"),
    # writes in every position
    ("create", "CREATE (:Scene {id: 'x', story_id: 'harbor-night'})"),
    ("merge", "MERGE (s:Scene {id: 'x'})"),
    ("set", "MATCH (s:Scene) SET s.status = 'done'"),
    ("delete", "MATCH (s:Scene) DETACH DELETE s"),
    ("with-then-write", "MATCH (s:Scene) WITH s LIMIT 1 SET s.title = 'x'"),
    ("foreach", "MATCH (s:Scene) WITH collect(s) AS ss FOREACH (x IN ss | SET x.status = 'x')"),
    ("call-subquery", "MATCH (s:Scene) CALL { WITH s SET s.title = 'x' } RETURN count(*)"),
    ("write-as-variable", "MATCH (n) WITH n AS create MATCH (m:Scene) DETACH DELETE m"),
    ("schema-drop", "DROP TABLE Scene"),
    ("schema-alter", "ALTER TABLE Scene ADD extra STRING"),
    ("schema-create", "CREATE NODE TABLE Extra(id STRING, PRIMARY KEY(id))"),
    # files
    ("load-from", "LOAD FROM '{secret}' RETURN *"),
    ("load-from-options", "LOAD FROM '{secret}' (header=false, delim='|') RETURN *"),
    ("load-with-headers", "LOAD WITH HEADERS (a STRING) FROM '{secret}' RETURN *"),
    ("load-csv-neo4j", "LOAD CSV FROM 'file://{secret}' AS row RETURN row"),
    ("copy-to", "COPY (MATCH (s:Scene) RETURN s.id) TO '{out}'"),
    ("copy-from", "COPY Scene FROM '{secret}'"),
    ("export-db", "EXPORT DATABASE '{outdir}'"),
    ("import-db", "IMPORT DATABASE '{outdir}'"),
    ("attach", "ATTACH '{secret}' AS x (dbtype lbug)"),
    # table functions (several crash LadybugDB while binding)
    ("read-csv-serial", "CALL READ_CSV_SERIAL('{secret}') RETURN *"),
    ("read-csv-parallel", "CALL READ_CSV_PARALLEL('{secret}') RETURN *"),
    ("read-parquet", "CALL READ_PARQUET('{secret}') RETURN *"),
    ("read-npy", "CALL READ_NPY('{secret}') RETURN *"),
    ("project-graph", "CALL project_graph('g', ['Scene'], ['NEXT'])"),
    ("file-info", "CALL file_info('{secret}') RETURN *"),
    # settings, extensions, macros, sequences
    ("setting-threads", "CALL threads = 1"),
    ("setting-home", "CALL home_directory = '{outdir}'"),
    ("current-setting", "CALL current_setting('home_directory') RETURN *"),
    ("install-extension", "INSTALL httpfs"),
    ("load-extension", "LOAD EXTENSION '{secret}'"),
    ("macro", "CREATE MACRO m(x) AS x + 1"),
    ("sequence", "CREATE SEQUENCE seq"),
    ("nextval", "RETURN nextval('seq')"),
    # unicode look-alikes
    ("nbsp", "MATCH (s:Scene)\u00a0DETACH DELETE s"),
    ("fullwidth-semicolon", "MATCH (s:Scene) RETURN s\uff1b MATCH (x:Scene) DETACH DELETE x"),
    ("greek-question-mark", "MATCH (s:Scene) RETURN s\u037e MATCH (x:Scene) DETACH DELETE x"),
    ("zero-width-space", "MATCH (s:Scene) DE\u200bTACH DELETE s"),
    ("cyrillic-e", "MATCH (s:Scene) D\u0415TACH DELETE s"),
    ("bom", "\ufeffMATCH (s:Scene) DETACH DELETE s"),
]

READS = [
    "MATCH (s:Scene) RETURN s.id AS id ORDER BY id",
    "MATCH (s:Scene) WHERE s.title = 'CREATE' RETURN count(s) AS n",
    "MATCH (s:Scene) RETURN s.id AS id;",
    "MATCH (c:Character)-[:APPEARS_IN]->(s:Scene) RETURN c.name AS name, count(s) AS n ORDER BY name",
    "MATCH (a:Scene)-[r:NEXT]->(b:Scene) RETURN a.id, r.kind, b.id",
    "MATCH p = (a:Scene)-[:NEXT*1..3]->(b:Scene) RETURN length(p) AS l ORDER BY l DESC LIMIT 1",
    "MATCH (s:Scene) WHERE EXISTS { MATCH (s)-[:NEXT]->(:Scene) } RETURN count(s) AS n",
    "MATCH (s:Scene) RETURN list_filter(s.characters, x -> x <> 'mara') AS c LIMIT 1",
    "MATCH (s:Scene) RETURN CASE WHEN s.clock > 5 THEN 'late' ELSE 'early' END AS w, count(*) AS n",
    "UNWIND range(1, 5) AS i RETURN i, i ^ 2 AS sq ORDER BY i DESC SKIP 1 LIMIT 2",
    "CALL show_tables() RETURN *",
    "CALL table_info('Scene') RETURN *",
    "MATCH (s:Scene {id: $id}) RETURN s.title",
    "RETURN 'it\\'s', \"a\\\"b\", '\\u00e9\\n' AS v",
    "MATCH (s:Scene) RETURN s.id UNION MATCH (c:Character) RETURN c.id",
    "RETURN list_transform([1, 2], x -> x * 2) AS doubled",
]


def test_enough_attacks():
    assert len(ATTACKS) >= 50


@pytest.fixture
def planted(tmp_path):
    secret = tmp_path / "planted" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text(f"{SECRET},1\n{SECRET},2\n")
    (tmp_path / "out").mkdir()
    return {"secret": str(secret), "out": str(tmp_path / "out" / "stolen.csv"), "outdir": str(tmp_path / "out" / "db"),
            "root": tmp_path}


@pytest.fixture
def loaded(store, example_story):
    store.load_story(example_story)
    return store


def fill(template: str, planted: dict) -> str:
    for key in ("secret", "outdir", "out"):
        template = template.replace("{" + key + "}", planted[key])
    return template


def dump(store) -> list[str]:
    """Every node and relationship with all its properties, read through the store's own connection."""
    out = []
    with store._transaction(write=False) as run:
        for row in run("MATCH (n) RETURN n", {}):
            out.append(json.dumps(row["n"], sort_keys=True, default=str))
        for row in run("MATCH (a)-[r]->(b) RETURN a.id AS a, r, b.id AS b", {}):
            out.append(json.dumps([row["a"], row["r"], row["b"]], sort_keys=True, default=str))
    return sorted(out)


def files_under(root) -> set:
    own = {"graph", "graph.wal", "graph.shadow"}  # the story's database; checkpoints add and remove the log
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs if f not in own}


def _assert_harmless(store, planted, before_dump, before_files, said: str) -> None:
    assert dump(store) == before_dump, "the graph changed"
    assert files_under(planted["root"]) == before_files, "a file appeared or went"
    assert not os.path.exists(planted["out"]) and not os.path.exists(planted["outdir"])
    assert SECRET not in said, "the planted file leaked"
    n = store.query("MATCH (s:Scene) RETURN count(s) AS n").rows[0][0]  # the process and the console still work
    assert n == len([d for d in before_dump if '"_LABEL": "Scene"' in d])


@pytest.mark.parametrize("name,template", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_first_guard_alone_refuses(name, template, planted):
    with pytest.raises(ReadOnlyViolation, match="read-only query refused"):
        check_read_only(fill(template, planted))


@pytest.mark.parametrize("name,template", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_second_guard_alone_stops_it(name, template, loaded, planted):
    """The backend's guard with the first guard removed: the query reaches the engine as written."""
    before, files = dump(loaded), files_under(planted["root"])
    try:
        result = loaded._user_query(fill(template, planted), {}, ConsoleLimits(5.0, 100))
        said = json.dumps(result.rows, default=str)
    except (ReadOnlyViolation, QueryError) as e:
        said = str(e)
    _assert_harmless(loaded, planted, before, files, said)


@pytest.mark.parametrize("name,template", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_both_guards_refuse(name, template, loaded, planted):
    before, files = dump(loaded), files_under(planted["root"])
    with pytest.raises(ReadOnlyViolation, match="read-only query refused") as exc:
        loaded.query(fill(template, planted))
    _assert_harmless(loaded, planted, before, files, str(exc.value))


@pytest.mark.parametrize("cypher", READS)
def test_reads_are_accepted_and_answered(cypher, loaded, example_story):
    assert check_read_only(cypher)
    result = loaded.query(cypher, {"id": example_story.scenes[0].id})
    assert result.columns and not result.truncated


def test_known_answers(loaded, example_story):
    rows = loaded.query("MATCH (s:Scene) RETURN s.id AS id ORDER BY id").rows
    assert [r[0] for r in rows] == sorted(s.id for s in example_story.scenes)
    n = loaded.query("MATCH (s:Scene) WHERE s.id = $id RETURN count(s) AS n", {"id": example_story.scenes[0].id}).rows
    assert n == [[1]]
    assert loaded.query("RETURN 'it\\'s' AS v, \"a\\\"b\" AS w, '\\u00e9' AS x").rows == [["it's", 'a"b', "é"]]


def test_parameters_are_not_code(loaded, example_story):
    evil = "x'}) DETACH DELETE s //"
    assert loaded.query("MATCH (s:Scene) WHERE s.id = $id RETURN count(s) AS n", {"id": evil}).rows == [[0]]
    assert len(loaded.scenes()) == len(example_story.scenes)


@pytest.mark.parametrize("cypher", [
    "MATCH (s:Scene) RETURN [x IN s.characters WHERE x <> 'a' | toUpper(x)] AS c",  # Neo4j's comprehensions
    "MATCH (s:Scene) RETURN [(s)-[:NEXT]->(t) | t.id] AS next",
    "MATCH (s:Scene) WHERE (s)-[:NEXT]->() AND NOT s.id STARTS WITH 'x' AND s.title IS NOT NULL RETURN s",
    "CALL db.labels() YIELD label RETURN label",
    "MATCH (s:Scene) RETURN COUNT { MATCH (s)<-[:APPEARS_IN]-(c) } AS n",
    "MATCH (a:Scene)-[:NEXT* SHORTEST 1..10]->(b) RETURN b.id",
    "RETURN {a: 1, b: [1, 2]}['a'], [1, 2, 3][0..2], -1.5e3, .5",
    "MATCH (s:Scene) RETURN s.set, s.create, s.delete",  # any word is a property key after "."
])
def test_guard_accepts_both_dialects_reading_shapes(cypher):
    assert check_read_only(cypher) == cypher


def test_trailing_semicolon_is_one_statement():
    assert check_read_only("MATCH (s:Scene) RETURN s.id AS id;  \n") == "MATCH (s:Scene) RETURN s.id AS id"
    assert check_read_only("RETURN ';' AS v") == "RETURN ';' AS v"


# -- option values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.0004, 1e-9, 0, -1, math.nan, math.inf, 3601, True, "5"])
def test_timeout_must_be_a_sane_number(loaded, timeout):
    with pytest.raises(QueryError, match="time limit must be"):
        loaded.query("RETURN 1", timeout_s=timeout)


@pytest.mark.parametrize("params", [{"x": [1, "a"]}, {"x": math.nan}, {"bad name": 1}, {"x": object()}, [1]])
def test_bad_parameters_are_clear_errors(loaded, params):
    with pytest.raises(QueryError):
        loaded.query("RETURN $x AS v", params)


def test_max_rows_bound_and_truncated(loaded):
    r = loaded.query("UNWIND range(1, 50) AS i RETURN i", max_rows=10)
    assert [row[0] for row in r.rows] == list(range(1, 11)) and r.truncated
    r = loaded.query("UNWIND range(1, 10) AS i RETURN i", max_rows=10)
    assert len(r.rows) == 10 and not r.truncated
    with pytest.raises(QueryError, match="row limit"):
        loaded.query("RETURN 1", max_rows=0)


# -- bounded parsing -------------------------------------------------------------------------------


NESTINGS = {
    "lists": lambda d: "RETURN " + "[" * d + "1" + "]" * d + " AS v",
    "parens": lambda d: "RETURN " + "(" * d + "1" + ")" * d + " AS v",
    "maps": lambda d: "RETURN " + "{a: " * d + "1" + "}" * d + " AS v",
    "functions": lambda d: "RETURN " + "abs(" * d + "1" + ")" * d + " AS v",
    "case": lambda d: "RETURN " + "CASE WHEN true THEN " * d + "1" + " END" * d + " AS v",
    "exists": lambda d: "MATCH (s:Scene) WHERE " + "EXISTS { MATCH (s) WHERE " * d + "true" + " }" * d + " RETURN 1",
}
FLAT = {
    "sum": lambda n: "RETURN " + "+".join(["1"] * n) + " AS v",
    "and": lambda n: "RETURN " + " AND ".join(["true"] * n) + " AS v",
    "list": lambda n: "RETURN [" + ",".join(["1"] * n) + "] AS v",
    "string": lambda n: "RETURN '" + "x" * n + "' AS v",
}


def _deepest(make) -> int:
    d = 1
    while True:
        try:
            check_read_only(make(d + 1))
        except ReadOnlyViolation:
            return d
        d += 1


@pytest.mark.parametrize("shape", sorted(NESTINGS))
def test_deep_nesting_is_refused_or_answered_in_time(loaded, shape):
    make = NESTINGS[shape]
    d = _deepest(make)
    assert d <= MAX_DEPTH
    t0 = time.perf_counter()
    with pytest.raises(ReadOnlyViolation):
        loaded.query(make(max(d + 1, 300)))  # 300 nested lists took the engine 16-29 s unguarded
    with pytest.raises(ReadOnlyViolation):
        loaded.query(make(3000))  # 1,000 nested lists or 3,000 parentheses crashed it
    assert time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    try:
        loaded.query(make(d), timeout_s=5.0)
    except QueryError as e:  # an engine error (e.g. a type it cannot bind), never a hang
        assert "time limit" not in str(e)
    assert time.perf_counter() - t0 < 6.0


@pytest.mark.parametrize("shape", sorted(FLAT))
def test_queries_at_the_size_cap_are_refused_or_answered_in_time(loaded, shape):
    make = FLAT[shape]
    n = 1
    while len(make(n * 2)) <= MAX_QUERY_CHARS:
        n *= 2
    t0 = time.perf_counter()
    try:
        loaded.query(make(n), timeout_s=5.0)
    except ReadOnlyViolation:
        pass
    assert time.perf_counter() - t0 < 6.0
    with pytest.raises(ReadOnlyViolation, match="longer than"):
        loaded.query(make(MAX_QUERY_CHARS))


def test_guard_is_fast_on_adversarial_backtracking():
    shapes = ["RETURN " + "[(a)-(b)" * 200, "MATCH " + "(a)-" * 500 + "(b) RETURN 1",
              "RETURN " + "((((a)-[" * 150, "RETURN " + "[" * 30 + "(" * 2 + "x" * 7000]
    for q in shapes:
        t0 = time.perf_counter()
        with pytest.raises(ReadOnlyViolation):
            check_read_only(q)
        assert time.perf_counter() - t0 < 0.5, q[:40]


# -- the embedded console does not hold the store ---------------------------------------------------


def test_engine_commits_while_a_slow_console_query_runs(loaded):
    import threading

    done = {}

    def slow():
        try:
            loaded.query("UNWIND range(1, 100000000) AS x WITH x WHERE x % 7 = 100 RETURN count(*)", timeout_s=3.0)
        except QueryError as e:
            done["error"] = str(e)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    seq = loaded.append_event("scene.note", "s01", {"while": "console"})  # a write transaction
    took = time.perf_counter() - t0
    t.join()
    assert seq > 0 and took < 3.0, took  # waits only while the query's process opens the file
    assert "time limit" in done.get("error", "")


# -- Neo4j's second guard reads the planner's own plan -----------------------------------------------


def _plan(op, details="", *children):
    return {"operatorType": op, "args": {"Details": details}, "children": list(children)}


@pytest.mark.parametrize("plan,refused", [
    (_plan("ProduceResults@neo4j", "", _plan("Projection", "", _plan("NodeByLabelScan", "s:Scene"))), set()),
    (_plan("ProduceResults", "", _plan("LoadCSV", "row")), {"LoadCSV"}),
    (_plan("ProduceResults", "", _plan("ProcedureCall", "apoc.load.json($url)")), {"ProcedureCall"}),
    (_plan("ProduceResults", "", _plan("ProcedureCall", "db.labels() :: (label :: STRING)")), set()),
    (_plan("ProduceResults", "", _plan("Apply", "", _plan("SetProperty", "s.x = 1"), _plan("Argument"))),
     {"SetProperty"}),
    (_plan("ProduceResults", "", _plan("TransactionForeach", "", _plan("Create", "(x)"))),
     {"TransactionForeach", "Create"}),
])
def test_neo4j_plan_operators(plan, refused):
    from storygraph.graphdb.neo4j import _refused_operators

    assert _refused_operators(plan) == refused
