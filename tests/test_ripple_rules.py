"""The rules of staleness as pure functions (``storygraph.ripple``): what counts as a change, and which generated
scenes a change reaches, with known answers on small hand-made dependency graphs."""

from __future__ import annotations

from dataclasses import replace

from storygraph.domain import Character, Reference, SceneSpec, Transition
from storygraph.ripple import (
    Cause, Dependent, StoryChanges, character_changes, dependents_from_rows, spec_changes, stale_marks, subtree,
)
from storygraph.timeline import place_scenes


def test_spec_changes_name_the_fields_and_ignore_equal_values():
    a = SceneSpec("s", "walks", ("mara",), "pier", lighting="dusk", fps=24.0, steps=8)
    assert spec_changes(a, replace(a, fps=24)) == []  # 24 == 24.0
    assert spec_changes(a, replace(a, lighting="dawn", steps=9)) == ["lighting", "steps"]
    assert spec_changes(a, replace(a, characters=("mara", "ines"))) == ["characters"]
    ref = Reference("/refs/a.png", "character", "mara", sha="111")
    with_ref = replace(a, references=(ref,))
    assert spec_changes(with_ref, replace(with_ref, references=(replace(ref, path="/elsewhere/a.png"),))) == []
    assert spec_changes(with_ref, replace(with_ref, references=(replace(ref, sha="222"),))) == ["references"]
    unknown = replace(with_ref, references=(replace(ref, sha=None),))  # an older graph: compared by path
    assert spec_changes(unknown, with_ref) == []
    assert spec_changes(unknown, replace(with_ref, references=(replace(ref, path="/b.png"),))) == ["references"]


def test_character_changes_compare_the_reference_by_its_bytes_when_known():
    c = Character("mara", "Mara", "red coat", "/refs/mara.png", 12.0, "aaa")
    assert character_changes(c, replace(c, reference_path="/copy/mara.png")) == []
    assert character_changes(c, replace(c, reference_sha="bbb")) == ["reference"]
    assert character_changes(c, replace(c, description="green coat", decay_tau=10)) == ["description", "decay_tau"]
    assert character_changes(replace(c, reference_sha=None), replace(c, reference_path="/b.png")) == ["reference"]


def _deps(spec: dict) -> dict:
    """``{scene: (clock, characters, [scenes made from], [references])}`` as dependents."""
    return {sid: Dependent(sid, "done", tuple(chars), None, clock, 0, set(made), set(refs))
            for sid, (clock, chars, made, refs) in spec.items()}


DEPS = _deps({
    "a": (0, ["mara"], [], []), "b": (1, ["mara"], ["a"], []), "c": (2, ["ivo"], ["b"], []),
    "d": (3, ["ivo"], ["c", "a"], []), "e": (3, ["ivo"], [], ["refs/ivo.png"]), "f": (4, [], ["e"], []),
})


def test_a_change_reaches_exactly_what_was_made_from_it_transitively():
    marks = stale_marks(DEPS, changed={"b": Cause("b", "edited: lighting")})
    assert {k: m.reason for k, m in marks.items()} == {
        "b": "edited: lighting", "c": "upstream b: edited: lighting",
        "d": "upstream b: edited: lighting (made from c)"}
    assert {m.origin for m in marks.values()} == {"b"}


def test_a_source_marks_what_was_made_from_it_and_not_itself():
    marks = stale_marks(DEPS, sources={"a": Cause("a", "take 1 chosen instead of take 0")})
    assert set(marks) == {"b", "c", "d"}
    assert marks["d"].reason == "upstream a: take 1 chosen instead of take 0"  # d was made from a directly


def test_characters_and_references_mark_the_scenes_that_use_them_and_what_follows():
    assert set(stale_marks(DEPS, characters={"mara": "description"})) == {"a", "b", "c", "d"}
    marks = stale_marks(DEPS, references={"refs/ivo.png": "replaced"})
    assert {k: m.reason for k, m in marks.items()} == {
        "e": "reference refs/ivo.png changed: replaced", "f": "upstream e: reference refs/ivo.png changed: replaced"}
    assert stale_marks(DEPS) == {}


def test_the_first_cause_to_reach_a_scene_names_it():
    marks = stale_marks(DEPS, changed={"a": Cause("a", "edited: action"), "c": Cause("c", "edited: camera")})
    assert marks["c"].reason == "edited: camera" and marks["d"].origin in ("a", "c")
    assert marks["b"].reason == "upstream a: edited: action"


def test_the_walk_is_one_pass_over_a_long_chain():
    n = 20000
    chain = _deps({f"s{i}": (i, [], [f"s{i - 1}"] if i else [], []) for i in range(n)})
    marks = stale_marks(chain, changed={"s0": Cause("s0", "edited: action")})
    assert len(marks) == n and marks[f"s{n - 1}"].reason == f"upstream s0: edited: action (made from s{n - 2})"


def test_a_moved_scene_takes_its_subtree_with_it():
    ids = ["a", "b", "c", "d", "e"]
    placements = place_scenes(ids, [Transition("a", "b"), Transition("b", "c"), Transition("c", "d"),
                                    Transition("a", "e")])
    assert subtree(placements, "c") == ["c", "d"] and subtree(placements, "a") == ids and subtree(placements, "x") == []
    changes = StoryChanges(moved={"c": ("b", "e")}, scenes={"d": ["lighting"]})
    assert changes.changed_scenes(placements) == {"c": Cause("c", "moved: now follows e"),
                                                   "d": Cause("c", "moved: now follows e")}


def test_rows_group_by_scene_and_resolve_appearances_to_their_scene():
    rows = [{"id": "b", "status": "done", "characters": ["mara"], "environment": "pier", "clock": 1.0, "pos": 1,
             "kind": "Appearance", "target": "a:t0:mara", "target_scene": "a"},
            {"id": "b", "status": "done", "characters": ["mara"], "environment": "pier", "clock": 1.0, "pos": 1,
             "kind": "Scene", "target": "a", "target_scene": None},
            {"id": "b", "status": "done", "characters": ["mara"], "environment": "pier", "clock": 1.0, "pos": 1,
             "kind": "Reference", "target": "refs/x.png", "target_scene": None},
            {"id": "a", "status": "stale", "characters": [], "environment": None, "clock": 0.0, "pos": 0,
             "kind": None, "target": None, "target_scene": None}]
    got = dependents_from_rows(rows)
    assert (got["b"].scenes, got["b"].references, got["b"].environment) == ({"a"}, {"refs/x.png"}, "pier")
    assert (got["a"].scenes, got["a"].status) == (set(), "stale")


def test_the_store_bench_reports_the_stale_query_at_both_sizes(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "store.py"
    proc = subprocess.run([sys.executable, str(bench), "--skip-context", "--stale-scenes", "300", "--stale-queries", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["stale_query_ms"]) == {"100", "300"} and all(v > 0 for v in out["stale_query_ms"].values())
    # every scene of the synthetic story is made from its parent: editing the first makes all 300 stale
    assert out["mark_stale_first_marked"] == 300
