"""Story files: the example loads; every malformed file fails with the right line, field and message;
text round-trips unchanged; loading never writes anything."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from support import write_png
from storygraph.domain import GenerationDefaults
from storygraph.storyfile import MAX_FILE_BYTES, StoryFileError, load_story
from storygraph.timeline import place_scenes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"
BAD = Path(__file__).resolve().parent / "data" / "bad"

# file in tests/data/bad (without .yaml), line, field, a fragment of the message
BAD_FILES = [
    ("yaml_unclosed_flow", 12, "scenes[0].characters[1]", "did not find expected ',' or ']'"),
    ("yaml_mapping_in_value", 10, "scenes[0]", "mapping values are not allowed"),
    ("yaml_tab_indent", 10, "scenes[0].id", "tab character"),
    ("yaml_two_documents", 10, "", "single document"),
    ("yaml_unclosed_quote", 12, "scenes[0].action", "quoted scalar at line 10"),
    ("top_list", 2, "", "got a list"),
    ("top_scalar", 2, "", "got a string"),
    ("empty", 1, "", "no YAML document"),
    ("top_unknown_key", 8, "charaters", "did you mean 'characters'"),
    ("top_key_int", 10, "1", "a key must be a word"),
    ("missing_story", 2, "story", "missing required field 'story'"),
    ("missing_scenes", 2, "scenes", "missing required field 'scenes'"),
    ("empty_scenes", 8, "scenes", "no scenes"),
    ("story_no_id", 2, "story.id", "missing required field 'id'"),
    ("story_id_space", 3, "story.id", "invalid id 'my story'"),
    ("story_id_markup", 2, "story.id", "invalid id '[/]'"),
    ("story_title_int", 4, "story.title", "got an integer (2049); put it in quotes"),
    ("defaults_list", 3, "defaults", "got a list"),
    ("character_missing_name", 4, "characters[0].name", "missing required field 'name'"),
    ("character_blank_description", 6, "characters[0].description", "must not be empty"),
    ("character_empty_id", 4, "characters[0].id", "empty id"),
    ("character_id_path", 4, "characters[0].id", "invalid id '../../etc'"),
    ("character_id_int", 4, "characters[0].id", "got an integer (42)"),
    ("character_name_bool", 5, "characters[0].name", "got a boolean (true)"),
    ("character_unknown_key", 6, "characters[0].descripton", "did you mean 'description'"),
    ("character_decay_negative", 7, "characters[0].decay_tau", "-5 is out of range"),
    ("character_reference_missing", 7, "characters[0].reference", "file not found"),
    ("characters_mapping", 4, "characters", "got a mapping"),
    ("duplicate_character", 6, "characters[2].id", "duplicate id 'alice': already used by character"),
    ("duplicate_across_kinds", 8, "environments[1].id", "already used by character 'carol' at line 5"),
    ("duplicate_scene_case", 10, "scenes[1].id", "differs only in case"),
    ("duplicate_yaml_key", 12, "scenes[0].action", "duplicate key 'action' (first at line 10)"),
    ("scene_missing_action", 9, "scenes[0].action", "missing required field 'action'"),
    ("scene_unknown_character", 13, "scenes[0].characters[1]", "unknown character 'bob'"),
    ("scene_character_twice", 11, "scenes[0].characters[2]", "'alice' is listed twice"),
    ("scene_unknown_environment", 12, "scenes[0].environment", "did you mean 'street'"),
    ("scene_characters_string", 11, "scenes[0].characters", "got a string ('alice')"),
    ("scene_width_not_multiple", 11, "scenes[0].width", "700 is not allowed"),
    ("defaults_width_huge", 4, "defaults.width", "8192 is not allowed"),
    ("scene_height_bool", 11, "scenes[0].height", "got a boolean"),
    ("scene_frames_not_8k1", 11, "scenes[0].frames", "120 is not allowed"),
    ("scene_frames_float", 11, "scenes[0].frames", "got a number (121.0)"),
    ("defaults_frames_huge", 3, "defaults.frames", "100001 is not allowed"),
    ("scene_fps_zero", 11, "scenes[0].fps", "0 is out of range"),
    ("defaults_steps_many", 4, "defaults.steps", "5000 is not allowed"),
    ("defaults_guidance_nan", 4, "defaults.guidance", "not a finite number"),
    ("scene_seed_negative", 11, "scenes[0].seed", "-1 is not allowed"),
    ("scene_negative_prompt_list", 11, "scenes[0].negative_prompt", "got a list"),
    ("transition_gap_negative", 13, "transitions[0].gap", "-2 is out of range"),
    ("transition_gap_inf", 14, "transitions[1].gap", "inf is not a finite number"),
    ("transition_unknown_kind", 13, "transitions[0].kind", "unknown transition kind 'cutt' (did you mean 'cut'?)"),
    ("transition_missing_kind", 13, "transitions[0].kind", "missing required field 'kind'"),
    ("transition_unknown_scene", 14, "transitions[1].to", "unknown scene 's4'"),
    ("transition_cycle", 15, "transitions[2]", "cycle: s1 -> s2 -> s3 -> s1"),
    ("transition_self", 13, "transitions[0]", "from scene 's2' to itself"),
    ("transition_merge", 14, "transitions[1]", "scene 's3' already has an incoming transition (from 's1' at line 13)"),
    ("transition_from_int", 13, "transitions[0].to", "got an integer (2)"),
    ("reference_unknown_kind", 14, "scenes[0].references[0].kind", "unknown reference kind 'face'"),
    ("reference_strength", 15, "scenes[0].references[0].strength", "1.5 is out of range"),
    ("reference_file_missing", 13, "scenes[0].references[0].path", "file not found"),
    ("reference_frame_past_end", 15, "scenes[0].references[0].frame_index", "past the scene's 121 frames"),
    ("reference_not_in_scene", 13, "scenes[0].references[0].character", "'carol' is not in this scene"),
    ("reference_place_with_character", 13, "scenes[0].references[0].character", "names no character"),
    ("scene_memory_unknown", 12, "scenes[1].memory", "unknown memory mode 'contxt' (did you mean 'context'?)"),
    ("scene_memory_extend_after_cut", 12, "scenes[1].memory", "but this scene follows a cut transition"),
    ("scene_memory_extend_opening", 9, "scenes[0].memory", "follows no transition (it opens a timeline)"),
    ("python_tag", 10, "scenes[0].action", "unsupported YAML tag"),
    ("merge_key_scalar", 10, "scenes[0].<<", "bad merge key"),
]


def test_table_covers_every_bad_file():
    on_disk = {p.stem for p in BAD.glob("*.yaml") if not p.stem.startswith("hostile_")}  # test_hostile.py: those
    assert on_disk == {name for name, *_ in BAD_FILES}
    assert len(on_disk) >= 35


@pytest.mark.parametrize("name,line,field,fragment", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file(name, line, field, fragment):
    path = BAD / f"{name}.yaml"
    with pytest.raises(StoryFileError) as info:
        load_story(path)
    err = info.value
    assert err.path == str(path)
    assert (err.line, err.field) == (line, field), str(err)
    assert fragment in err.message, str(err)
    assert err.expected, "every error says what was expected"
    text = str(err)
    assert text.startswith(f"{path}:{line}: ")
    if field:
        assert text.startswith(f"{path}:{line}: {field}: {err.message}")
    assert text.endswith(f"(expected {err.expected})")


def test_error_message_format():
    with pytest.raises(StoryFileError) as info:
        load_story(BAD / "scene_unknown_character.yaml")
    assert str(info.value) == (
        f"{BAD / 'scene_unknown_character.yaml'}:13: scenes[0].characters[1]: unknown character 'bob' "
        "(expected one of: alice, carol)"
    )


# ---------------------------------------------------------------------------------------------
# The example


def test_example_loads_with_the_right_shape():
    story = load_story(EXAMPLE)
    assert story.id == "harbor-night"
    assert story.source_path == str(EXAMPLE)
    assert len(story.scenes) == 11
    assert {c.id for c in story.characters} == {"mara", "tomas", "ines"}
    assert len(story.environments) == 4
    assert len(story.transitions) == 10
    assert {t.kind for t in story.transitions} == {"continuous", "cut", "time_skip"}
    outgoing = Counter(t.from_id for t in story.transitions)
    assert [s for s, n in outgoing.items() if n > 1] == ["s07-dawn"]
    appearances = Counter(c for s in story.scenes for c in s.characters)
    assert appearances == {"mara": 8, "ines": 7, "tomas": 4}
    assert story.defaults == GenerationDefaults(
        width=768, height=512, frames=121, fps=24.0, steps=8, guidance=1.0, seed=7,
        negative_prompt=story.defaults.negative_prompt,
    )
    assert "\n" not in story.defaults.negative_prompt  # folded with >-
    env_ids = {e.id for e in story.environments}
    assert all(s.environment in env_ids for s in story.scenes)
    assert all(s.action.strip() and s.camera and s.lighting for s in story.scenes)
    epilogue = story.scene("s09-epilogue").resolved(story.defaults)
    assert (epilogue.frames, epilogue.width, epilogue.seed) == (161, 768, 7)
    assert story.scene("s06-escape").resolved(story.defaults).seed == 1207
    # the story is one tree: a single root, every scene placed, two timelines
    placed = place_scenes([s.id for s in story.scenes], list(story.transitions))
    assert len(placed) == 11
    assert {p.branch for p in placed.values()} == {"s01-arrival", "s08-overboard"}
    assert placed["s08-return"].branch == "s01-arrival"  # the first transition out continues the timeline


def test_example_has_no_binaries():
    assert [p.name for p in (ROOT / "examples").iterdir() if p.suffix not in (".yaml", ".yml", ".md")] == []


def test_docs_example_is_valid(tmp_path):
    doc = (ROOT / "docs" / "story-format.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "refs").mkdir()
    for i, name in enumerate(("mara.png", "mara-coat.png")):
        write_png(tmp_path / "refs" / name, i)
    (tmp_path / "doc.yaml").write_text(block, encoding="utf-8")
    story = load_story(tmp_path / "doc.yaml")
    assert [s.id for s in story.scenes] == ["s01", "s02"]
    assert [s.memory for s in story.scenes] == [None, "keyframe"]
    ref = story.scene("s02").references[0]
    assert (ref.kind, ref.character, ref.strength, ref.path) == (
        "costume", "mara", 0.8, str(tmp_path / "refs" / "mara-coat.png"))


# ---------------------------------------------------------------------------------------------
# Valid content, kept exactly

NASTY = [
    "'}) DETACH DELETE n //",
    'He said "stop" and \'left\'',
    "Zoë Ødegaard — 東京の夜 🌃",
    "line one\nline two\n\n  indented line four\n",
    "MATCH (n) RETURN n; CREATE (:Scene {id: 'x'}) // $param `tick`",
    "back\\slash and a tab\there",
    "  leading and trailing spaces  ",
    "#not a comment & *not an alias [not, a, list] {not: a map}",
    "null",
]


def test_strings_round_trip_unchanged(tmp_path):
    doc = {
        "story": {"id": "nasty", "title": NASTY[0]},
        "defaults": {"negative_prompt": NASTY[4]},
        "characters": [
            {"id": f"c{i}", "name": text, "description": NASTY[(i + 1) % len(NASTY)]}
            for i, text in enumerate(NASTY)
        ],
        "environments": [{"id": "env", "name": NASTY[2], "description": NASTY[3]}],
        "scenes": [
            {"id": "s1", "action": NASTY[0], "title": NASTY[1], "lighting": NASTY[3], "weather": NASTY[5],
             "camera": NASTY[7], "characters": ["c0", "c1"], "environment": "env"},
        ],
    }
    path = tmp_path / "nasty.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    story = load_story(path)
    assert story.title == NASTY[0]
    assert [c.name for c in story.characters] == NASTY
    assert [c.description for c in story.characters] == NASTY[1:] + NASTY[:1]
    env = story.environments[0]
    assert (env.name, env.description) == (NASTY[2], NASTY[3])
    s = story.scenes[0]
    assert (s.action, s.title, s.lighting, s.weather, s.camera) == (NASTY[0], NASTY[1], NASTY[3], NASTY[5], NASTY[7])
    assert story.defaults.negative_prompt == NASTY[4]


def test_handwritten_block_scalars_and_quotes(tmp_path):
    path = tmp_path / "hand.yaml"
    path.write_text(
        "\ufeffstory: {id: hand, title: 'It''s \"quoted\"'}\n"
        "characters:\n"
        "  - id: bob\n"
        "    name: \"Bob '}) DETACH DELETE n //\"\n"
        "    description: |\n"
        "      first line\n"
        "      second line: with a colon\n"
        "scenes:\n"
        "  - id: s1\n"
        "    action: >-\n"
        "      folded\n"
        "      onto one line\n"
        "    characters: [bob]\n",
        encoding="utf-8",
    )
    story = load_story(path)
    assert story.title == "It's \"quoted\""
    assert story.characters[0].name == "Bob '}) DETACH DELETE n //"
    assert story.characters[0].description == "first line\nsecond line: with a colon\n"
    assert story.scenes[0].action == "folded onto one line"


def test_defaults_overrides_nulls_merge_keys_and_references(tmp_path, monkeypatch):
    folder = tmp_path / "story"
    (folder / "refs").mkdir(parents=True)
    write_png(folder / "refs" / "ann.png", 0)
    (folder / "s.yaml").write_text(
        "story: {id: t}\n"
        "defaults: {width: 512, frames: 9, fps: 12.5, guidance: 3, seed: 4294967295}\n"
        "characters:\n"
        "  - {id: ann, name: Ann, description: a girl, reference: refs/ann.png, decay_tau: 7}\n"
        "scenes:\n"
        "  - &base {id: a, action: runs, characters: [ann], environment: ~, camera: ~}\n"
        "  - <<: *base\n"
        "    id: b\n"
        "    frames: 1025\n"
        "    height: 4096\n"
        "    references: [{path: refs/ann.png, character: ann, frame_index: 1024, strength: 0}]\n"
        "transitions:\n"
        "  - {from: a, to: b, kind: time_skip}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # reference paths resolve against the story file, not the cwd
    story = load_story("story/s.yaml")
    assert story.title == "t"
    assert story.defaults.width == 512 and story.defaults.height == 512 and story.defaults.fps == 12.5
    assert isinstance(story.defaults.guidance, float) and story.defaults.seed == 2**32 - 1
    ann = story.characters[0]
    assert ann.reference_path == str(folder / "refs" / "ann.png") and ann.decay_tau == 7.0
    a, b = story.scenes
    assert (a.environment, a.camera, a.frames) == (None, "", None)
    assert (b.action, b.characters, b.frames, b.height) == ("runs", ("ann",), 1025, 4096)
    assert b.resolved(story.defaults).width == 512
    ref = b.references[0]
    assert (ref.kind, ref.frame_index, ref.strength, ref.path) == ("character", 1024, 0.0, ann.reference_path)
    t = story.transitions[0]
    assert (t.kind, t.gap, t.effective_gap) == ("time_skip", None, 10.0)


def test_memory_mode_per_scene(tmp_path):
    p = tmp_path / "modes.yaml"
    p.write_text(
        "story: {id: m}\n"
        "characters: [{id: a, name: A, description: d}]\n"
        "scenes:\n"
        "  - {id: s1, action: x, characters: [a], memory: reference}\n"
        "  - {id: s2, action: y, characters: [a], memory: extend}\n"
        "  - {id: s3, action: z, characters: [a], memory: keyframe}\n"
        "  - {id: s4, action: w, characters: [a]}\n"
        "transitions:\n"
        "  - {from: s1, to: s2, kind: continuous}\n"
        "  - {from: s2, to: s3, kind: cut}\n"
        "  - {from: s3, to: s4, kind: time_skip}\n", encoding="utf-8")
    story = load_story(p)
    assert [s.memory for s in story.scenes] == ["reference", "extend", "keyframe", None]


def test_story_without_characters_or_transitions(tmp_path):
    path = tmp_path / "minimal.yaml"
    path.write_text("story: {id: m}\nscenes:\n  - {id: s, action: waves crash on rocks}\n", encoding="utf-8")
    story = load_story(path)
    assert (len(story.scenes), story.characters, story.transitions) == (1, (), ())
    assert story.defaults == GenerationDefaults()


# ---------------------------------------------------------------------------------------------
# Files that are not story files at all


def _fails(path, line, fragment, **kw) -> StoryFileError:
    with pytest.raises(StoryFileError) as info:
        load_story(path, **kw)
    assert info.value.line == line, str(info.value)
    assert fragment in info.value.message, str(info.value)
    assert info.value.expected
    return info.value


def test_missing_file_and_directory(tmp_path):
    _fails(tmp_path / "nope.yaml", None, "no such file")
    _fails(tmp_path, None, "not a regular file")


def test_file_over_the_size_limit(tmp_path):
    path = tmp_path / "big.yaml"
    line = b"# " + b"x" * 1021 + b"\n"
    with open(path, "wb") as fh:
        fh.write(line * (MAX_FILE_BYTES // len(line) + 1))
    assert path.stat().st_size > MAX_FILE_BYTES
    _fails(path, None, "over the limit")
    small = tmp_path / "small.yaml"
    shutil.copy(EXAMPLE, small)
    _fails(small, None, "over the limit", max_bytes=1000)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("story: {id: x}\nscenes:\n  - {id: s, action: Zoë}\n".encode("latin-1"))
    _fails(path, 3, "not UTF-8")


def test_deep_nesting_is_refused_before_parsing(tmp_path):
    path = tmp_path / "deep.yaml"
    depth = 200_000  # deep enough to crash a recursive composer
    path.write_text("story: {id: x}\nscenes: " + "[" * depth + "]" * depth + "\n", encoding="utf-8")
    # our own check refuses it; PyYAML >= 6.0.4 may refuse it first with its own nesting limit — either way
    # the file is refused with its line, before any recursive composition
    _fails(path, 2, "nesting")


def test_alias_expansion_is_bounded(tmp_path):
    """Each alias of a full scene costs ~70 values; 5,000 of them (35 KB) are past the budget of a file this size."""
    names = [f"c{i}" for i in range(64)]
    path = tmp_path / "bomb.yaml"
    path.write_text(
        "story: {id: bomb}\n"
        "characters: [" + ", ".join(f"{{id: {n}, name: {n}, description: d}}" for n in names) + "]\n"
        "environments: []\n"
        f"scenes:\n  - &s {{id: s0, action: walks, characters: [{', '.join(names)}]}}\n" + "  - *s\n" * 5000,
        encoding="utf-8",
    )
    err = _fails(path, 5, "expands to more than")
    assert err.field.startswith("scenes[")


def test_non_finite_and_bool_numbers(tmp_path):
    for value, fragment in ((".inf", "not a finite number"), ("-.inf", "not a finite number"),
                            ("false", "got a boolean"), ("'24'", "got a string")):
        path = tmp_path / "n.yaml"
        path.write_text(f"story: {{id: x}}\ndefaults:\n  fps: {value}\nscenes: [{{id: s, action: a}}]\n",
                        encoding="utf-8")
        err = _fails(path, 3, fragment)
        assert err.field == "defaults.fps"


# ---------------------------------------------------------------------------------------------
# Loading never writes


def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def test_loading_bad_files_writes_nothing(tmp_path, monkeypatch):
    work = tmp_path / "bad"
    shutil.copytree(BAD, work)
    shutil.copy(EXAMPLE, work / "harbor.yaml")
    monkeypatch.chdir(work)
    before = _snapshot(work)
    before_parent = sorted(os.listdir(tmp_path))
    for name, *_ in BAD_FILES:
        with pytest.raises(StoryFileError):
            load_story(work / f"{name}.yaml")
        with pytest.raises(StoryFileError):
            load_story(f"{name}.yaml")  # relative to the cwd as well
    load_story(work / "harbor.yaml")
    assert _snapshot(work) == before
    assert sorted(os.listdir(tmp_path)) == before_parent
    assert not (work / "pwned").exists() and not (ROOT / "pwned").exists()


def test_error_is_an_exception_with_fields():
    err = StoryFileError("a.yaml", 3, "scenes[0].id", "empty id", "an id")
    assert isinstance(err, Exception)
    assert str(err) == "a.yaml:3: scenes[0].id: empty id (expected an id)"
    assert str(StoryFileError("a.yaml", None, "", "no such file")) == "a.yaml: no such file"
