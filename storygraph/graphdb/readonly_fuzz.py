"""A differential fuzzer for the console's first guard (``readonly.py``) against the real LadybugDB engine.

It generates queries built to make a tokenizer and a database disagree — read queries with comments of every
shape, strings with every escape in both quote kinds, backquoted names, ``;``, ``COMMIT``, writes and unicode
look-alikes spliced in at random places — and asks the guard about each. Every query the guard accepts is then
given to the engine in a child process that holds a *writable* in-memory copy of a story graph and may touch
no file at all (Landlock with no rules). The guard is wrong if the engine

* refuses to prepare it as one statement,
* reports a file access, or
* ends up with a different graph after running it;

and, for ``RETURN <string literal>`` probes, if the engine decodes the literal differently from the guard.

Kept in the package so that the test suite (``tests/test_readonly_fuzz.py``, 10,000+ queries per run) and
``bench/fuzz_readonly.py --n N`` (long runs) share one copy.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

from .readonly import check_read_only, tokenize
from .store import ReadOnlyViolation

BASES = [
    "MATCH (s:Scene) RETURN s.id AS id ORDER BY id",
    "MATCH (s:Scene) WHERE s.title = 'x' RETURN count(s) AS n",
    "MATCH (c:Character)-[:APPEARS_IN]->(s:Scene) RETURN c.name AS name, count(s) AS n ORDER BY name",
    "MATCH (a:Scene)-[r:NEXT]->(b:Scene) RETURN a.id, r.kind, b.id",
    "MATCH (s:Scene) WITH s ORDER BY s.clock LIMIT 3 RETURN collect(s.id) AS ids",
    "UNWIND [1, 2, 3] AS i RETURN i * 2 AS j",
    "RETURN 'a' AS v",
    "RETURN \"b\" AS v",
    "MATCH (s:Scene) RETURN CASE WHEN s.clock > 1 THEN 'late' ELSE 'early' END AS w",
    "MATCH (s:Scene) RETURN [x IN s.characters WHERE x <> 'a' | upper(x)] AS c",
    "MATCH (s:Scene) WHERE EXISTS { MATCH (s)-[:NEXT]->(:Scene) } RETURN s.id",
    "MATCH (a:Appearance)-[:`IN`]->(s:Scene) RETURN s.id, count(a) AS n",
    "MATCH (s:Scene {id: 's1'}) RETURN s.title",
    "CALL show_tables() RETURN *",
    "MATCH (s:Scene) RETURN s.id UNION MATCH (c:Character) RETURN c.id",
    "OPTIONAL MATCH (s:Scene)-[:SET_IN]->(e:Environment) RETURN s.id, e.id",
]

FRAGMENTS = [
    "/*", "*/", "**/", "/**/", "/* */", "//", "// x\n", "/*/", "'", '"', "\\'", '\\"', "\\\\", "\\", "`", "``",
    "`a``b`", ";", "; COMMIT;", " COMMIT ", "; MATCH (x:Scene) DETACH DELETE x", " DETACH DELETE s ",
    " CREATE (:Scene {id: 'z'}) ", " SET s.title = 'z' ", " MERGE (:Character {id: 'z'}) ", " LOAD FROM 'x' ",
    " COPY Scene TO 'x.csv' ", "\n", "\r", "\t", "\u00a0", "\u2028", "\u2029", "\uff1b", "\u037e", "\u200b",
    "\ufeff", "\u0435", "\\u0027", "\\x27", "\\n", "\\u003b", "\\U0001F600", "''", '""', "'; MATCH (s) DELETE s; '",
    "\" ; CHECKPOINT ; \"", " CALL threads = 1 ", " BEGIN TRANSACTION ", "*/ MATCH (s:Scene) DELETE s /*",
    "$x", "{", "}", "(", ")", "[", "]", "-->", "<-", " AS ", " UNION ", "1..3", "0x1F", ".5", "1e3", "é", "😀",
]

# Words whose extent a tokenizer and the engine may judge differently, placed in three slots around a write:
# ``<A> RETURN <B> <C> <payload>``. The slots are few and small on purpose, so that every ordering of
# comment openers/closers and quotes comes up many times in a run of 10,000.
SLOT_WORDS = ["", "/*", "*/", "**/", "/* **/", "'", '"', "//"]
ESCAPE_WORDS = ["\\", "\\\\", "\\'", '\\"', "\\x27", "\\u0027", "''", "\\u005c", "\\\n"]
PAYLOADS = ["COMMIT; MATCH (x:Scene) DETACH DELETE x", "; MATCH (x:Scene) DETACH DELETE x",
            "; CREATE (:Scene {id: 'z'})"]

ALPHABET = ("abcXYZ019 _-.,;:(){}[]<>=+*/%^|$`'\"\\\n\t" + "\u00a0\u2028\u0435\u00e9\u4e2d\U0001f600\u200b")
ESCAPES = ["\\\\", "\\'", '\\"', "\\n", "\\t", "\\r", "\\b", "\\f", "\\u00e9", "\\u0041", "\\U0001F600", "\\x41",
           "\\q", "\\/", "\\u12", "\\u0000", "\\uD800", "\\"]

SCHEMA_ROWS = [
    "CREATE (:Scene {id: 's1', story_id: 'st', title: 'one', clock: 0.0, characters: ['a', 'b']})",
    "CREATE (:Scene {id: 's2', story_id: 'st', title: 'two', clock: 1.0, characters: ['a']})",
    "CREATE (:Character {id: 'a', story_id: 'st', name: 'Ana'})",
    "CREATE (:Environment {id: 'e', story_id: 'st', name: 'pier', description: 'a pier'})",
    "MATCH (a:Scene {id: 's1'}), (b:Scene {id: 's2'}) CREATE (a)-[:NEXT {kind: 'cut', gap: 2.0, decay: 0.8}]->(b)",
    "MATCH (c:Character {id: 'a'}), (s:Scene {id: 's1'}) CREATE (c)-[:APPEARS_IN {strength: 1.0}]->(s)",
    "MATCH (s:Scene {id: 's1'}), (e:Environment {id: 'e'}) CREATE (s)-[:SET_IN]->(e)",
]


@dataclass
class FuzzReport:
    generated: int = 0
    accepted: int = 0
    literal_probes: int = 0
    violations: list = field(default_factory=list)  # (query, what went wrong)

    def as_dict(self) -> dict:
        return {"generated": self.generated, "accepted": self.accepted, "refused": self.generated - self.accepted,
                "literal_probes": self.literal_probes, "violations": len(self.violations),
                "examples": self.violations[:5]}


def _splice(rng: random.Random, base: str) -> str:
    q = base
    for _ in range(rng.randint(1, 3)):
        frag = rng.choice(FRAGMENTS)
        at = rng.randint(0, len(q))
        q = q[:at] + frag + q[at:]
    return q


def _literal(rng: random.Random) -> str:
    quote = rng.choice("'\"")
    parts = []
    for _ in range(rng.randint(0, 8)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(ESCAPES))
        elif r < 0.45:
            parts.append(rng.choice(["'", '"']))
        else:
            parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4))))
    return quote + "".join(parts) + quote


def _quoted_name(rng: random.Random) -> str:
    body = "".join(rng.choice("abcXYZ09 _-.`;'\"/*é") for _ in range(rng.randint(0, 6)))
    return f"MATCH (n:`{body}`) RETURN count(n) AS c"


def _confuser(rng: random.Random) -> str:
    """The shape of a tokenizer bypass: delimiters around a write that one reader sees as a comment or a string."""
    if rng.random() < 0.7:
        a, b, c = (rng.choice(SLOT_WORDS) for _ in range(3))
        return f"{a} RETURN {b} {c} {rng.choice(PAYLOADS)} {rng.choice(SLOT_WORDS)}"
    q = rng.choice("'\"")
    return f"RETURN {q}a{rng.choice(ESCAPE_WORDS)}{rng.choice(['', q, chr(39), chr(34)])} {rng.choice(PAYLOADS)} {q}"


def generate(rng: random.Random, n: int) -> list[str]:
    """``n`` queries: spliced read queries, delimiter confusers, string-literal and backquoted-name probes."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            out.append(_splice(rng, rng.choice(BASES)))
        elif r < 0.7:
            out.append(_confuser(rng))
        elif r < 0.93:
            tail = rng.choice(["", "", " ;", ";", " // c", " /* c */", ", 1 AS w", "; RETURN 2"])
            out.append(f"RETURN {_literal(rng)} AS v{tail}")
        else:
            out.append(_quoted_name(rng))
    return out


def _decoded_literal(query: str) -> Optional[str]:
    """For an accepted ``RETURN <string> AS v``: the value the guard decoded; None for other shapes."""
    try:
        toks = tokenize(query)
    except ReadOnlyViolation:
        return None
    kinds = [(t.kind, t.upper) for t in toks]
    if len(toks) == 5 and kinds[0] == ("name", "RETURN") and toks[1].kind == "string" and kinds[2] == ("name", "AS"):
        return toks[1].text
    return None


def run(queries: list[str], timeout_s: float = 120.0) -> FuzzReport:
    """Check ``queries`` through the guard and, for those it accepts, through the engine (see the docstring)."""
    report = FuzzReport(generated=len(queries))
    accepted: list[tuple[str, Optional[str]]] = []
    for q in queries:
        try:
            sent = check_read_only(q)
        except ReadOnlyViolation:
            continue
        accepted.append((sent, _decoded_literal(q)))
    report.accepted = len(accepted)
    report.literal_probes = sum(1 for _, lit in accepted if lit is not None)
    if not accepted:
        return report
    proc = subprocess.run([sys.executable, "-m", "storygraph.graphdb.readonly_fuzz", "--child"],
                          input=json.dumps([q for q, _ in accepted]), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        report.violations.append(("<child>", f"the engine process failed: {proc.stderr[-2000:]}"))
        return report
    results = json.loads(proc.stdout)
    for (q, lit), res in zip(accepted, results):
        if res.get("violation"):
            report.violations.append((q, res["violation"]))
        elif lit is not None and res.get("ok") and res.get("value") != lit:
            report.violations.append((q, f"the engine decoded the string as {res.get('value')!r}, the guard as {lit!r}"))
    return report


def _dump(con) -> str:
    parts = []
    for q in ("MATCH (n) RETURN label(n) AS l, n.id AS id ORDER BY l, id",
              "MATCH (a)-[r]->(b) RETURN label(r) AS l, a.id AS x, b.id AS y ORDER BY l, x, y"):
        parts.append(repr(con.execute(q).get_all()))
    for label in ("Scene", "Character", "Environment"):
        parts.append(repr(con.execute(f"MATCH (n:{label}) RETURN n ORDER BY n.id").get_all()))
    return "\n".join(parts)


def _child() -> None:  # pragma: no cover - runs in a subprocess
    import datetime  # noqa: F401 - values the engine returns; nothing can be imported after Landlock
    import decimal  # noqa: F401
    import uuid  # noqa: F401
    import warnings

    import ladybug

    from . import landlock, queries

    warnings.simplefilter("ignore")
    queries_in = json.loads(sys.stdin.read())
    db = ladybug.Database(":memory:", backend="pybind")
    con = ladybug.Connection(db)
    for stmt in queries.load("schema", "ladybug").split(";"):
        if stmt.strip():
            con.execute(stmt)
    for stmt in SCHEMA_ROWS:
        con.execute(stmt)
    before = _dump(con)
    if landlock.available():
        landlock.restrict_to_reading([])
    con.set_query_timeout(1000)
    out = []
    for q in queries_in:
        res: dict = {}
        try:
            prepared = con._prepare(q)
            if not prepared.is_success():
                msg = prepared.get_error_message()
                if "multiple statements" in msg.lower():
                    res["violation"] = "the engine sees several statements"
                elif "permission denied" in msg.lower() or "cannot open file" in msg.lower():
                    res["violation"] = f"file access while preparing: {msg[:200]}"
                else:
                    res["error"] = msg[:200]
            else:
                r = con.execute(prepared, {"x": 1})
                rows = r.get_all()
                res["ok"] = True
                if rows and rows[0]:
                    res["value"] = rows[0][0] if isinstance(rows[0][0], str) else None
        except Exception as e:  # noqa: BLE001 - any engine error is an answer, not a crash of the fuzzer
            msg = str(e)
            if "permission denied" in msg.lower() or "cannot open file" in msg.lower():
                res["violation"] = f"file access: {msg[:200]}"
            else:
                res["error"] = f"{type(e).__name__}: {msg[:200]}"
        after = _dump(con)
        if after != before:
            res["violation"] = "the graph changed"
            before = after
        out.append(res)
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--child"]:
        _child()
