"""Every Cypher query the README shows runs on the default backend (LadybugDB), as written.

Queries are taken from the README itself: ``storygraph query "…"`` command lines, ``engine.query("…")`` calls,
```` ```cypher ```` blocks, and each pattern of the "Graph model" paragraph (run as a MATCH that returns the
properties it names). They run through the same read-only path users take, on the example story with a generated
take, so every label, relationship and property they name must exist. The README's first lines are checked too:
CI runs exactly its test command.
"""

from __future__ import annotations

import itertools
import re

import pytest

from support import ROOT, commit_take, example_store

README = (ROOT / "README.md").read_text(encoding="utf-8")


def command_queries() -> list[str]:
    out = [m.group(1) for m in re.finditer(r'storygraph query "((?:[^"\\]|\\.)+)"', README)]
    out += [m.group(1) for m in re.finditer(r'\.query\("((?:[^"\\]|\\.)+)"', README)]
    out += [m.group(1).strip() for m in re.finditer(r"```cypher\n(.*?)```", README, re.S)]
    return out


def graph_model_queries() -> list[str]:
    para = README[README.index("Graph model:"):]
    para = para[:para.index("log.")]
    spans = [a or b for a, b in re.findall(r"``(.+?)``|`([^`]+)`", para.replace("\n", " "))]
    out = []
    for span in spans:
        if "]->(" not in span:
            continue
        groups = re.findall(r"\(([\w|]+)\)", span)
        for labels in itertools.product(*(g.split("|") for g in groups)):
            it = iter(labels)
            pattern = re.sub(r"\(([\w|]+)\)", lambda m: f"(:{next(it)})", span)
            rels = []

            def rel(m):
                name = f"r{len(rels)}"
                rels.append((name, [p.strip() for p in (m.group(2) or "").split(",") if p.strip()]))
                return f"-[{name}:{m.group(1)}]->"

            pattern = re.sub(r"-\[:(`?\w+`?)(?:\s*\{([^}]*)\})?\]->", rel, pattern)
            returned = [f"{n}.{p}" for n, props in rels for p in props] or ["count(*) AS n"]
            out.append(f"MATCH {pattern} RETURN {', '.join(returned)} LIMIT 1")
    return out


@pytest.fixture(scope="module")
def story_store(tmp_path_factory):
    store, story = example_store(tmp_path_factory.mktemp("readme") / "story")
    for sid in ("s01-arrival", "s02-package"):
        commit_take(store, sid)
    yield store, story
    store.close()


def test_the_readme_shows_queries_and_graph_patterns():
    assert len(command_queries()) >= 2
    patterns = graph_model_queries()
    assert any("`IN`" in q for q in patterns) and len(patterns) >= 8


@pytest.mark.parametrize("cypher", command_queries() + graph_model_queries())
def test_every_readme_query_runs_on_the_default_backend(story_store, cypher):
    store, _ = story_store
    result = store.query(cypher, {}, read_only=True)
    assert result.columns


def test_the_per_character_query_answers_what_the_story_file_says(story_store):
    store, story = story_store
    q = next(q for q in command_queries() if "APPEARS_IN" in q and "count(s)" in q)
    got = {r["name"]: r["scenes"] for r in store.query(q, {}, read_only=True).records()}
    want = {c.name: sum(c.id in s.characters for s in story.scenes) for c in story.characters}
    assert got == want


def test_ci_runs_the_readme_test_command():
    lines = README.splitlines()
    setup, test = lines[2], lines[3]
    assert setup.startswith("Set up and run:") and "./setup.sh" in setup
    command = re.search(r"`([^`]+)`", test).group(1)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-2] == "bash setup.sh" and ci[-1] == command
