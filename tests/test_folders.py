"""Commands on things that are not stories: a folder with no story, a path that is not a folder, a ``graph`` that is
not a database. Each is refused with one line and exit 2, and nothing is created; opening a story from Python
writes no media."""

from __future__ import annotations

import pytest

from support import EXAMPLE, storygraph_cli


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.fixture
def somefolder(tmp_path):
    d = tmp_path / "somefolder"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    return d


@pytest.mark.parametrize("command", [["resume"], ["export"], ["report"], ["show"], ["serve", "--port", "0"],
                                     ["studio", "--port", "0"], ["query", "MATCH (s:Scene) RETURN s.id"]])
def test_commands_on_a_folder_with_no_story_create_nothing(somefolder, command):
    before = _tree(somefolder)
    r = storygraph_cli(*command, "--dir", somefolder, timeout=120)
    _refused(r, str(somefolder), "not a story folder", "no graph")
    assert _tree(somefolder) == before


@pytest.mark.parametrize("command", [["load", EXAMPLE, "--graph"], ["load", EXAMPLE, "--dir"], ["resume", "--dir"],
                                     ["init", "--dir"], ["query", "MATCH (s:Scene) RETURN s.id", "--dir"],
                                     ["demo", "--dir"], ["run", EXAMPLE, "--dir"]])
def test_a_regular_file_is_not_a_story_folder(tmp_path, command):
    path = tmp_path / "regular"
    path.write_text("a file")
    r = storygraph_cli(*command, path, timeout=120)
    _refused(r, str(path), "is not a folder")
    assert path.read_text() == "a file" and _tree(tmp_path) == ["regular"]


def test_a_graph_that_is_not_a_database(tmp_path):
    folder_graph = tmp_path / "a"
    (folder_graph / "graph").mkdir(parents=True)
    r = storygraph_cli("query", "MATCH (s:Scene) RETURN s.id", "--dir", folder_graph, timeout=120)
    _refused(r, str(folder_graph / "graph"), "is not a storygraph database")
    r = storygraph_cli("load", EXAMPLE, "--dir", folder_graph, timeout=120)
    _refused(r, str(folder_graph / "graph"), "is not a storygraph database")
    assert _tree(folder_graph) == ["graph"]
    garbage = tmp_path / "b"
    garbage.mkdir()
    (garbage / "graph").write_bytes(bytes(range(256)) * 64)
    for command in (["show"], ["query", "MATCH (s:Scene) RETURN s.id"]):
        r = storygraph_cli(*command, "--dir", garbage, timeout=120)
        _refused(r, str(garbage / "graph"), "cannot be opened as a storygraph database")
    assert _tree(garbage) == ["graph"]


def test_demo_overwrite_replaces_only_a_story(somefolder):
    r = storygraph_cli("demo", "--dir", somefolder, "--overwrite", timeout=120)
    _refused(r, str(somefolder), "not a story folder")
    assert (somefolder / "notes.txt").read_text() == "mine"


def test_opening_a_story_in_python_writes_no_media(tmp_path):
    from storygraph.engine.engine import StoryEngine

    folder = tmp_path / "story"
    with StoryEngine.open(folder) as engine:
        engine.load(EXAMPLE)
        assert engine.query("MATCH (s:Scene) RETURN count(s) AS n").records() == [{"n": 11}]
    assert not (folder / "media").exists()
    regular = tmp_path / "regular"
    regular.write_text("x")
    from storygraph.errors import InvalidInput

    with pytest.raises(InvalidInput, match="is not a folder"):
        StoryEngine.open(regular)


def test_reference_folders_of_storygraph_toml_allow_images_outside_the_story_files_folder(tmp_path):
    from support import write_png
    from storygraph.config import Config

    shared = tmp_path / "shared"
    write_png(shared / "mara.png", 1)
    story_file = tmp_path / "stories" / "s.yaml"
    story_file.parent.mkdir()
    story_file.write_text(
        "story: {id: refs}\n"
        f"characters:\n  - {{id: mara, name: Mara, description: d, reference: {shared / 'mara.png'}}}\n"
        "scenes:\n  - {id: s1, action: walks, characters: [mara]}\n", encoding="utf-8")
    story_dir = tmp_path / "story"
    story_dir.mkdir()
    Config.from_dict({"story": {"reference_folders": ["../shared"]}}).save(story_dir)

    r = storygraph_cli("validate", story_file, timeout=120)
    _refused(r, f"{story_file}:3: characters[0].reference:", "is outside the folders reference images may come from")
    r = storygraph_cli("validate", story_file, "--dir", story_dir, timeout=120)
    assert r.returncode == 0, r.stderr
    r = storygraph_cli("load", story_file, "--dir", story_dir, timeout=120)
    assert r.returncode == 0, r.stderr
