"""The ``storygraph`` command line, run as a real process: load, query, validate, show, init, --version.

Every command runs in a subprocess exactly as a user would type it; expected values come from the
story file parsed with :func:`storygraph.storyfile.load_story`, never from the command under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storygraph.storyfile import load_story

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"
CLI = [sys.executable, "-m", "storygraph.cli"]
PER_CHARACTER = ("MATCH (c:Character)-[:APPEARS_IN]->(s:Scene) "
                 "RETURN c.name AS name, count(s) AS scenes ORDER BY name")
HEAVY = ("torch", "diffusers", "transformers", "faiss", "flask")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def sg(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd or ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)


def rows(graph, cypher: str, *params: str) -> list[dict]:
    args = ["query", cypher, "--dir", graph, "--json"]
    for p in params:
        args += ["--param", p]
    r = sg(*args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def snapshot(graph) -> dict:
    """What a write would change: node ids and main properties per label, relationship counts per type."""
    nodes = rows(graph, "MATCH (n) RETURN label(n) AS l, collect([n.id, n.name, n.title, n.action]) AS props")
    rels = rows(graph, "MATCH ()-[r]->() RETURN label(r) AS l, count(*) AS k")
    return {"nodes": {r["l"]: sorted(p[0] for p in r["props"]) for r in nodes},
            "props": {r["l"]: sorted(r["props"], key=json.dumps) for r in nodes},
            "rels": {r["l"]: r["k"] for r in rels}}


def expected_counts(story) -> list[dict]:
    out = []
    for c in story.characters:
        n = sum(1 for s in story.scenes if c.id in s.characters)
        if n:
            out.append({"name": c.name, "scenes": n})
    return sorted(out, key=lambda r: r["name"])


def tree(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def story():
    return load_story(EXAMPLE)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The example loaded once; tests using it only read."""
    graph = tmp_path_factory.mktemp("cli") / "harbor"
    r = sg("load", EXAMPLE, "--dir", graph)
    assert r.returncode == 0, r.stderr
    return graph, r.stdout


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A second copy of the example for tests that try to write and must be refused."""
    graph = tmp_path_factory.mktemp("cli") / "target"
    r = sg("load", EXAMPLE, "--dir", graph)
    assert r.returncode == 0, r.stderr
    return graph, snapshot(graph)


# ------------------------------------------------------------------------------------------------
# load + query


def test_load_reports_what_it_created(loaded, story):
    _, out = loaded
    assert f"{len(story.scenes)} scenes" in out
    assert f"{len(story.characters)} characters" in out
    assert f"{len(story.transitions)} transitions" in out
    assert f"{len(story.scenes)} Scene" in out and "nothing new" not in out


def test_query_counts_scenes_per_character(loaded, story):
    graph, _ = loaded
    got = rows(graph, PER_CHARACTER)
    assert got == expected_counts(story)  # also the order: ORDER BY name
    assert len(got) == len(story.characters)


def test_graph_matches_story_file(loaded, story):
    snap = snapshot(loaded[0])
    assert snap["nodes"]["Scene"] == sorted(s.id for s in story.scenes)
    assert snap["nodes"]["Character"] == sorted(c.id for c in story.characters)
    assert snap["nodes"]["Environment"] == sorted(e.id for e in story.environments)
    assert snap["rels"]["NEXT"] == len(story.transitions)
    assert snap["rels"]["APPEARS_IN"] == sum(len(s.characters) for s in story.scenes)


def test_second_load_changes_nothing(tmp_path, story):
    graph = tmp_path / "twice"
    assert sg("load", EXAMPLE, "--dir", graph).returncode == 0
    counts, before = rows(graph, PER_CHARACTER), snapshot(graph)
    again = sg("load", EXAMPLE, "--dir", graph)
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout
    assert f"{len(story.scenes)} scenes" in again.stdout
    assert rows(graph, PER_CHARACTER) == counts == expected_counts(story)
    assert snapshot(graph) == before


def test_names_with_quotes_and_cypher_round_trip(tmp_path):
    odd = "Mara'}) DETACH DELETE n // \"ü\"\n`x`"
    text = EXAMPLE.read_text(encoding="utf-8").replace("name: Mara\n", f"name: {json.dumps(odd)}\n", 1)
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    story = load_story(path)
    assert story.character("mara").name == odd
    graph = tmp_path / "odd"
    assert sg("load", path, "--dir", graph).returncode == 0
    assert rows(graph, "MATCH (c:Character) WHERE c.id = $id RETURN c.name AS name", "id=mara") == [{"name": odd}]
    assert rows(graph, PER_CHARACTER) == expected_counts(story)


# ------------------------------------------------------------------------------------------------
# read-only queries


@pytest.mark.parametrize("cypher", [
    "CREATE (:Scene {id:'x'})",
    "MATCH (s:Scene) RETURN s.id; CREATE (:Scene {id:'x'})",
    "CREATE (:Scene {id:'x'}); MATCH (s:Scene) RETURN s.id",
    "MATCH (s:Scene) RETURN count(s); MATCH (c:Character) RETURN count(c)",
    "LOAD CSV FROM 'file:///etc/passwd' AS row CREATE (:Scene {id: row[0]})",
    "LOAD CSV WITH HEADERS FROM 'file:///etc/hosts' AS row RETURN row",
    "MATCH (s:Scene {id:'s01-arrival'}) DETACH DELETE s",
    "MATCH (s:Scene) /* only reading */ SET s.title = 'x' RETURN s.id",
])
def test_writes_are_refused_and_change_nothing(target, cypher):
    graph, before = target
    r = sg("query", cypher, "--dir", graph)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "read-only" in r.stderr.lower()
    assert "Traceback" not in r.stderr
    assert "row(s)" not in r.stdout
    after = snapshot(graph)
    assert after == before
    assert "x" not in after["nodes"]["Scene"]


def test_titles_survive_refused_set(target, story):
    graph, _ = target
    r = sg("query", "MATCH (s:Scene) SET s.title = 'x' RETURN s.id", "--dir", graph)
    assert r.returncode == 3
    got = rows(graph, "MATCH (s:Scene) RETURN s.id AS id, s.title AS title ORDER BY id")
    assert got == sorted(({"id": s.id, "title": s.title} for s in story.scenes), key=lambda r: r["id"])


# ------------------------------------------------------------------------------------------------
# --param


def test_param_string(loaded, story):
    got = rows(loaded[0], "MATCH (s:Scene) WHERE s.id = $id RETURN s.id AS id, s.title AS title",
               "id=s01-arrival")
    assert got == [{"id": "s01-arrival", "title": story.scene("s01-arrival").title}]


def test_param_int_filters(loaded, story):
    frames = {s.id: s.resolved(story.defaults).frames for s in story.scenes}
    odd = next(f for f in frames.values() if list(frames.values()).count(f) == 1)
    got = rows(loaded[0], "MATCH (s:Scene) WHERE s.frames = $f RETURN s.id AS id ORDER BY id", f"f={odd}")
    assert [r["id"] for r in got] == sorted(i for i, f in frames.items() if f == odd)


def test_param_values_are_json_parsed(loaded):
    got = rows(loaded[0], "RETURN $n + 1 AS m, $s AS s, $q AS q, $l AS l",
               "n=41", "s=s01-arrival", 'q="7"', "l=[1, 2]")
    assert got == [{"m": 42, "s": "s01-arrival", "q": "7", "l": [1, 2]}]


@pytest.mark.parametrize("value", [
    "s01-arrival' OR 1=1 //",
    "s01-arrival'}) DETACH DELETE s //",
    "x\" OR s.id <> \"",
    "'; CREATE (:Scene {id:'x'}); //",
])
def test_injection_looking_param_is_just_a_value(target, value):
    graph, before = target
    got = rows(graph, "MATCH (s:Scene) WHERE s.id = $id RETURN s.id AS id", f"id={value}")
    assert got == []
    assert snapshot(graph) == before


def test_param_without_equals_is_a_usage_error(loaded):
    r = sg("query", "RETURN $a AS a", "--dir", loaded[0], "--param", "a")
    assert r.returncode == 2
    assert "key=value" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------
# validate / load of broken files


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return lines[nth]


def _scene_index(story, sid: str) -> int:
    return [s.id for s in story.scenes].index(sid)


def _transition_index(story, src: str, dst: str) -> int:
    return [(t.from_id, t.to_id) for t in story.transitions].index((src, dst))


def _broken_cases(story):
    src = EXAMPLE.read_text(encoding="utf-8")
    keeper = "characters: [tomas]\n    environment: lighthouse\n    action: >-\n      Tomas wipes"
    assert keeper in src
    cases = {}
    t = src.replace(keeper, keeper.replace("[tomas]", "[tomaz]"))
    cases["unknown_character"] = (t, _line_of(t, "[tomaz]"),
                                  f"scenes[{_scene_index(story, 's03-keeper')}].characters[0]")
    market = "environment: market\n    action: >-\n      Mara and Ines"
    assert market in src
    t = src.replace(market, market.replace("market", "markt", 1))
    cases["unknown_environment"] = (t, _line_of(t, "environment: markt"),
                                    f"scenes[{_scene_index(story, 's08-return')}].environment")
    t = src.replace("- id: s02-package", "- id: s01-arrival")
    cases["duplicate_id"] = (t, _line_of(t, "- id: s01-arrival", 1), f"scenes[{_scene_index(story, 's02-package')}].id")
    t = src.replace("frames: 161", "frames: lots")
    cases["wrong_type"] = (t, _line_of(t, "frames: lots"), f"scenes[{_scene_index(story, 's09-epilogue')}].frames")
    after = "  - {from: s08-return, to: s09-market, kind: continuous}\n"
    assert after in src
    t = src.replace(after, after + "  - {from: s09-market, to: s01-arrival, kind: cut}\n")
    cases["cycle"] = (t, _line_of(t, "from: s09-market, to: s01-arrival"),
                      f"transitions[{_transition_index(story, 's08-return', 's09-market') + 1}]")
    return cases


CASES = ["unknown_character", "unknown_environment", "duplicate_id", "wrong_type", "cycle"]


@pytest.mark.parametrize("case", CASES)
def test_validate_broken_file(tmp_path, story, case):
    text, line, field = _broken_cases(story)[case]
    (tmp_path / f"{case}.yaml").write_text(text, encoding="utf-8")
    before = tree(tmp_path)
    r = sg("validate", f"{case}.yaml", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{case}.yaml:{line}: {field}:" in r.stderr
    assert "Traceback" not in r.stderr and "ok" not in r.stdout.split()
    assert tree(tmp_path) == before


def test_validate_bad_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text("story:\n  id: x\n  title: [unclosed\n", encoding="utf-8")
    before = tree(tmp_path)
    r = sg("validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "bad.yaml:" in r.stderr and "yaml" in r.stderr.lower()
    assert "Traceback" not in r.stderr
    assert tree(tmp_path) == before


def test_validate_good_file(story):
    r = sg("validate", EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert f"{len(story.scenes)} scenes" in r.stdout
    assert f"{len(story.transitions)} transitions" in r.stdout


def test_load_broken_file_writes_nothing(tmp_path, story):
    text, line, field = _broken_cases(story)["unknown_character"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    before = tree(tmp_path)
    graph = tmp_path / "g"
    r = sg("load", bad, "--dir", graph, cwd=tmp_path)
    assert r.returncode == 2
    assert f"{bad}:{line}: {field}:" in r.stderr
    assert not graph.exists()
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------------
# show, missing graphs


def test_show(loaded, story):
    r = sg("show", "--dir", loaded[0])
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert story.title in first and story.id in first
    assert f"{len(story.scenes)} scenes" in r.stdout
    assert f"{len(story.characters)} characters" in r.stdout


@pytest.mark.parametrize("command", [["query", "MATCH (s:Scene) RETURN s.id"], ["show"]])
def test_no_graph_fails_clearly(tmp_path, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    for folder in (empty, missing):
        r = sg(*command, "--dir", folder)
        assert r.returncode not in (0, 3)
        assert "Traceback" not in r.stderr
        assert str(folder) in r.stderr and "graph" in r.stderr
    assert list(empty.iterdir()) == []
    assert not missing.exists()


# ------------------------------------------------------------------------------------------------
# --version, init, start-up


def test_version():
    import importlib.metadata

    import storygraph

    r = sg("--version")
    assert r.returncode == 0
    assert storygraph.__version__ in r.stdout
    assert importlib.metadata.version("storygraph") == storygraph.__version__
    script = shutil.which("storygraph", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                os.environ.get("PATH", "")]))
    if script:  # the installed console script, not only ``python -m``
        s = subprocess.run([script, "--version"], capture_output=True, text=True, env=_env(), timeout=60)
        assert s.returncode == 0 and storygraph.__version__ in s.stdout


def test_init_writes_default_config_and_keeps_it(tmp_path):
    from storygraph.config import CONFIG_NAME, Config

    d = tmp_path / "new" / "story"
    r = sg("init", d)
    assert r.returncode == 0, r.stderr
    path = d / CONFIG_NAME
    assert Config.load(d) == Config()
    first = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    assert sg("init", d).returncode == 0
    assert path.read_bytes() == first and path.stat().st_mtime_ns == stamp
    # an edited file is left alone too
    edited = first.decode().replace(f"takes = {Config().engine.takes}", "takes = 3")
    assert edited != first.decode()
    path.write_text(edited, encoding="utf-8")
    assert sg("init", d).returncode == 0
    assert path.read_text(encoding="utf-8") == edited
    assert Config.load(d).engine.takes == 3


def _heavy_after(code: str) -> list:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_is_light():
    assert _heavy_after("import storygraph.cli") == []


def test_help_and_query_stay_light(loaded):
    help_code = "from storygraph.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _heavy_after(help_code) == []
    argv = ["query", "MATCH (s:Scene) RETURN count(s) AS n", "--dir", str(loaded[0]), "--json"]
    query_code = (f"from storygraph.cli import main\ntry:\n    main({argv!r})\n"
                  "except SystemExit as e:\n    assert not e.code, e.code")
    assert _heavy_after(query_code) == []


# ------------------------------------------------------------------------------------------------
# one spelling for the story folder, old spellings still accepted


def test_old_folder_spellings_still_work(loaded, story, tmp_path):
    """``--dir`` is the story folder everywhere; a folder given to ``--graph`` and the old positional folder
    (init, resume, export, report, studio, demo) still work, hidden from --help."""
    graph = loaded[0]
    for args in (["show", "--graph", graph], ["show", "-g", graph], ["show", "-d", graph]):
        r = sg(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert f"{len(story.scenes)} scenes" in r.stdout
    assert rows(graph, PER_CHARACTER) == expected_counts(story)
    old = tmp_path / "old"
    assert sg("init", old).returncode == 0 and (old / "storygraph.toml").exists()
    new = tmp_path / "new"
    assert sg("init", "--dir", new).returncode == 0 and (new / "storygraph.toml").exists()
    r = sg("report", tmp_path / "nowhere")
    assert r.returncode == 2 and "no story folder" in r.stderr
    for command in ("init", "resume", "export", "report", "studio", "demo"):
        usage = sg(command, "--help").stdout
        assert "-d, --dir" in usage and "DIRECTORY]" not in usage.splitlines()[0], (command, usage)


def test_two_different_folders_are_refused(loaded, tmp_path):
    r = sg("show", "--dir", loaded[0], "--graph", tmp_path / "other")
    assert r.returncode == 2 and "two story folders" in r.stderr
    assert "Traceback" not in r.stderr
