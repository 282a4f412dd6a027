"""Every Neo4j-dialect query goes through Neo4j's own Cypher front end; any error but an undeclared
parameter fails.

The front end is the npm package ``@neo4j-cypher/language-support`` (pinned in tools/cypher-lint),
run under node by ``tools/cypher-lint/lint.mjs``. One node process lints every query.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from storygraph.graphdb import queries

LINT_DIR = Path(__file__).resolve().parent.parent / "tools" / "cypher-lint"
LINT_SCRIPT = LINT_DIR / "lint.mjs"
PACKAGE_DIR = LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support"
INSTALL_HINT = "run `npm ci --prefix tools/cypher-lint` (needs node >= 18 and npm)"


def lint(named: dict[str, str]) -> dict[str, list[dict]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed; install Node.js, then {INSTALL_HINT}")
    if not PACKAGE_DIR.is_dir():
        pytest.fail(f"Neo4j's Cypher front end is not installed in {LINT_DIR / 'node_modules'}: {INSTALL_HINT}")
    proc = subprocess.run(
        [node, str(LINT_SCRIPT)], input=json.dumps(named), capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"lint.mjs failed (exit {proc.returncode}): {proc.stderr.strip()}\n{INSTALL_HINT}")
    out = json.loads(proc.stdout)
    assert set(out) == set(named), "the linter must answer for every query it was given"
    return out


def errors(diagnostics: list[dict]) -> list[dict]:
    return [d for d in diagnostics if d["severity"] == "error" and not d["undefined_parameter"]]


def describe(name: str, query: str, diags: list[dict]) -> str:
    lines = query.splitlines()
    out = []
    for d in diags:
        src = lines[d["line"] - 1] if 0 < d["line"] <= len(lines) else ""
        out.append(f"  {name}.cypher:{d['line']}:{d['column']}: {d['message']}\n      {src}")
    return "\n".join(out)


def test_front_end_catches_errors():
    """The linter is live: a syntax error, an unknown function and a LadybugDB-only form all fail."""
    probes = {
        "broken": "MATCH (n RETURN n",
        "ladybug_lambda": "RETURN list_transform([1, 2], x -> x + 1) AS y",
        "ladybug_function": "MATCH (s:Scene) RETURN to_int64(s.frames) AS f",
        "ladybug_ddl": "CREATE NODE TABLE Scene(id STRING, PRIMARY KEY(id))",
        "undefined_variable": "MATCH (s:Scene) RETURN t.id AS id",
        "neo4j_ok": (
            "MATCH (s:Scene {id: $id}) "
            "RETURN exp(-s.gap / $tau) AS decay, toInteger(s.frames) AS f, [x IN $xs | x * 2] AS l"
        ),
    }
    out = lint(probes)
    for name in ("broken", "ladybug_lambda", "ladybug_function", "ladybug_ddl", "undefined_variable"):
        assert errors(out[name]), f"{name}: the front end accepted {probes[name]!r}"
    assert any("list_transform" in d["message"] for d in errors(out["ladybug_lambda"]))
    assert any("to_int64" in d["message"] for d in errors(out["ladybug_function"]))
    # A valid Neo4j query yields only undefined-parameter diagnostics, and those are recognised as such.
    assert errors(out["neo4j_ok"]) == []
    params = {d["message"] for d in out["neo4j_ok"] if d["undefined_parameter"]}
    assert params == {"Parameter $id is not defined.", "Parameter $tau is not defined.",
                      "Parameter $xs is not defined."}


def test_every_neo4j_query_passes_the_neo4j_front_end():
    named = queries.all_for("neo4j")
    out = lint(named)
    bad = {name: errors(diags) for name, diags in out.items() if errors(diags)}
    if bad:
        report = "\n".join(describe(name, named[name], diags) for name, diags in sorted(bad.items()))
        pytest.fail(f"{len(bad)} of {len(named)} Neo4j-dialect queries have errors:\n{report}")
