"""Edits ripple through a generated story (tiny random-weight models, real LadybugDB, the story file re-loaded):
the changed scene and exactly the scenes made from it go stale with their reasons, siblings stay, ``run`` makes
only those again, in timeline order; the same for another take chosen upstream and for a character's reference
image replaced in place; re-parenting in the file leaves one parent.

The story is built so that what each scene is made from is known by construction (no look frame across cuts, and
each character's memory has one source on each timeline):

    s01 Mara ──continuous──> s02 Mara+Ines ──cut──> s03 Tomas ──cut──> s04 Tomas ──cut──> s05 Ines ──continuous──> s06 Ines
                                                        └──cut──> s07 Tomas

    s02 extends s01; s04 and s07 remember Tomas from s03; s05 remembers Ines from s02 (her only earlier appearance);
    s06 extends s05; s03 is made from nothing earlier.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import new_engine, write_png

STORY = """\
story: {{id: ripple, title: Ripple}}
defaults: {{width: 64, height: 64, frames: 9, fps: 8, steps: 2, guidance: 1.0, seed: 3}}
characters:
  - {{id: mara, name: Mara, description: "short copper-red hair, yellow oilskin raincoat"}}
  - {{id: ines, name: Ines, description: "long black braid, faded red windbreaker"}}
  - {{id: tomas, name: Tomas, description: "full white beard, navy pea coat", reference: refs/tomas.png}}
environments:
  - {{id: pier, description: "a long wooden fishing pier at night"}}
  - {{id: lighthouse, description: "the lamp room of a stone lighthouse"}}
scenes:
  - {{id: s01, action: "Mara walks along the pier", characters: [mara], environment: pier}}
  - {{id: s02, action: "Mara hands Ines a parcel", characters: [mara, ines], environment: pier,
      lighting: "{lighting}"}}
  - {{id: s03, action: "Tomas watches the pier", characters: [tomas], environment: lighthouse}}
  - {{id: s04, action: "Tomas lifts his binoculars", characters: [tomas], environment: lighthouse}}
  - {{id: s05, action: "Ines runs along the pier", characters: [ines], environment: pier}}
  - {{id: s06, action: "Ines stops and looks back", characters: [ines], environment: pier}}
  - {{id: s07, action: "Tomas switches the lamp off", characters: [tomas], environment: lighthouse}}
transitions:
  - {{from: s01, to: s02, kind: continuous}}
  - {{from: s02, to: s03, kind: cut}}
  - {{from: {s04_parent}, to: s04, kind: cut}}
  - {{from: s04, to: s05, kind: cut}}
  - {{from: s05, to: s06, kind: continuous}}
  - {{from: s03, to: s07, kind: cut}}
"""
ALL = ["s01", "s02", "s03", "s04", "s05", "s06", "s07"]
TIMELINE = ["s01", "s02", "s03", "s04", "s07", "s05", "s06"]  # by story clock: 0, 1, 3, 5, 5, 7, 8
MADE_FROM = {"s01": set(), "s02": {"s01"}, "s03": set(), "s04": {"s03"}, "s05": {"s02"}, "s06": {"s05"},
             "s07": {"s03"}}


def write_story(folder: Path, lighting: str = "orange sodium lamps", s04_parent: str = "s03") -> Path:
    path = folder / "ripple.yaml"
    path.write_text(STORY.format(lighting=lighting, s04_parent=s04_parent), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_config, tiny_runtime):
    """The story generated once, one take per scene: (story folder, story file folder)."""
    base = tmp_path_factory.mktemp("ripple")
    src = base / "src"
    write_png(src / "refs" / "tomas.png", seed=1)
    engine = new_engine(base / "story", tiny_config, tiny_runtime,
                        engine={"look_strength": 0.0}, memory={"drift_threshold": -1.0})
    try:
        engine.load(write_story(src))
        assert engine.run() == TIMELINE
    finally:
        engine.close()
    return base / "story", src


@pytest.fixture
def story(generated, tmp_path, tiny_runtime):
    """A copy of the generated story (folder and story file) for one test; yields (engine, story file folder)."""
    from storygraph.config import Config
    from storygraph.engine.engine import StoryEngine

    shutil.copytree(generated[0], tmp_path / "story")
    shutil.copytree(generated[1], tmp_path / "src")
    engine = StoryEngine.open(tmp_path / "story", config=Config.load(tmp_path / "story"),
                              generator=tiny_runtime["generator"], encoders=tiny_runtime["encoders"])
    engine.load(write_story(tmp_path / "src"))  # the same story, from the copy's file: nothing changes
    assert engine.last_load.stale == {} and not engine.last_load.changes["scenes"]
    yield engine, tmp_path / "src"
    engine.close()


def made_from(engine, sid: str) -> set:
    """The scenes the chosen take of ``sid`` was made from, read from its provenance."""
    out = set()
    for c in engine.store.conditioned_on(sid):
        if c.target_kind == "Scene":
            out.add(c.target_id)
        elif c.target_kind == "Appearance":
            out.add(c.target_id.split(":")[0])
    return out


def status(engine) -> dict:
    return {s.id: (s.status, s.stale_reason, s.stale_from) for s in engine.store.scenes()}


def takes(engine) -> dict:
    return {sid: len(engine.store.takes(sid)) for sid in ALL}


def test_the_story_is_made_from_what_it_was_built_to_be_made_from(story):
    engine, _ = story
    assert {sid: made_from(engine, sid) for sid in ALL} == MADE_FROM


def test_a_lighting_edit_in_the_file_marks_the_scene_and_exactly_what_was_made_from_it(story):
    engine, src = story
    before = takes(engine)
    engine.load(write_story(src, lighting="a green flare over black water"))
    assert engine.last_load.changes["scenes"] == {"s02": ["lighting"]}
    assert engine.last_load.stale == {
        "s02": "edited: lighting", "s05": "upstream s02: edited: lighting",
        "s06": "upstream s02: edited: lighting (made from s05)"}
    st = status(engine)
    assert {sid for sid, (s, _, _) in st.items() if s == "stale"} == {"s02", "s05", "s06"}
    assert {sid: st[sid][2] for sid in ("s02", "s05", "s06")} == {"s02": "s02", "s05": "s02", "s06": "s02"}
    for sid in ("s01", "s03", "s04", "s07"):  # before it, and the branches that used nothing of it
        assert st[sid] == ("done", "", ""), sid
    # a stale scene keeps its media until it is made again
    assert all((engine.dir / engine.store.scene(sid).video_path).is_file() for sid in ("s02", "s05", "s06"))

    # run makes exactly those again, parents first, and the change reaches the prompt
    assert engine.run() == ["s02", "s05", "s06"]
    after = takes(engine)
    assert {sid: after[sid] - before[sid] for sid in ALL} == {
        "s01": 0, "s02": 1, "s03": 0, "s04": 0, "s05": 1, "s06": 1, "s07": 0}
    assert all(s == "done" and not why for s, why, _ in status(engine).values())
    assert "green flare" in engine.store.scene("s02").prompt
    assert made_from(engine, "s05") == {"s02"}
    assert engine.run() == []  # nothing left


def test_choosing_another_take_upstream_marks_what_was_made_from_the_old_one(story):
    engine, _ = story
    engine.generate("s02", takes=2)  # the chosen take changes only if a new one beats it
    chosen = engine.store.scene("s02").chosen_take
    other = next(t.take for t in engine.store.takes("s02") if t.take != chosen)
    for sid in ("s05", "s06"):  # made again after s02 changed, if it did
        if engine.store.scene(sid).status == "stale":
            engine.run()
    assert {s for s, (st, _, _) in status(engine).items() if st != "done"} == set()
    before = takes(engine)

    engine.choose_take("s02", other)
    st = status(engine)
    why = f"upstream s02: take {other} chosen instead of take {chosen}"
    assert {sid: v for sid, v in st.items() if v[0] != "done"} == {
        "s05": ("stale", why, "s02"), "s06": ("stale", f"{why} (made from s05)", "s02")}
    assert st["s02"] == ("done", "", "")  # the user's choice is not stale itself
    assert engine.run() == ["s05", "s06"]
    assert {sid: takes(engine)[sid] - before[sid] for sid in ALL} == {
        "s01": 0, "s02": 0, "s03": 0, "s04": 0, "s05": 1, "s06": 1, "s07": 0}
    [memory] = [c.target_id for c in engine.store.conditioned_on("s05") if c.target_kind == "Appearance"]
    assert memory == f"s02:t{other}:ines"  # the new s05 remembers Ines from the take chosen now


def test_a_reference_image_replaced_in_place_marks_every_scene_that_used_it(story):
    engine, src = story
    write_png(src / "refs" / "tomas.png", seed=2)  # same path, other pixels
    engine.load(write_story(src))
    assert engine.last_load.changes["characters"] == {"tomas": ["reference"]}
    why = "character tomas changed: reference"
    assert {sid: v for sid, v in status(engine).items() if v[0] != "done"} == {
        "s03": ("stale", why, "s03"), "s04": ("stale", why, "s04"), "s07": ("stale", why, "s07")}
    assert engine.run() == ["s03", "s04", "s07"]


def test_re_parenting_in_the_file_leaves_one_parent_and_marks_the_moved_subtree(story):
    from storygraph.timeline import child_placement

    engine, src = story
    engine.load(write_story(src, s04_parent="s02"))  # s04, and s05 and s06 after it, now follow s02
    assert engine.last_load.changes["moved"] == {"s04": ["s03", "s02"]}
    into = [(t.from_id, t.to_id) for t in engine.store.transitions() if t.to_id == "s04"]
    assert into == [("s02", "s04")]
    why = "moved: now follows s02"
    assert {sid: v for sid, v in status(engine).items() if v[0] != "done"} == {
        "s04": ("stale", why, "s04"), "s05": ("stale", f"upstream s04: {why}", "s04"),
        "s06": ("stale", f"upstream s04: {why}", "s04")}
    # the moved scenes' appearances moved with them, in the graph and in the vector index
    s06 = engine.store.scene("s06")
    assert (s06.placement.branch, s06.placement.pos) == ("s04", 2)
    for sid in ("s05", "s06"):
        [app] = engine.store.appearances(scene_id=sid)
        p = engine.store.scene(sid).placement
        assert (app.branch, app.pos, app.clock) == (p.branch, p.pos, p.clock)
    after_s06 = child_placement(s06.placement, "next", 1.0, continues_branch=True)
    assert set(engine.indexes()["dino"].allowed("ines", after_s06)) == {"s02:t0:ines", "s05:t0:ines", "s06:t0:ines"}
    assert engine.run() == ["s04", "s05", "s06"]
    # s03 is no longer before s04: Tomas has nothing to remember there
    assert {sid: made_from(engine, sid) for sid in ("s04", "s05", "s06")} == {
        "s04": set(), "s05": {"s02"}, "s06": {"s05"}}


def test_a_transition_removed_from_the_file_is_removed_from_the_graph(story):
    """s07 loses its incoming transition in the file: it starts a timeline of its own, the graph keeps no edge into
    it, and, having been made as what followed s03, it is stale."""
    engine, src = story
    path = write_story(src)
    path.write_text(path.read_text(encoding="utf-8").replace("  - {from: s03, to: s07, kind: cut}\n", ""),
                    encoding="utf-8")
    engine.load(path)
    assert [(t.from_id, t.to_id) for t in engine.store.transitions() if t.to_id == "s07"] == []
    s07 = engine.store.scene("s07")
    assert s07.placement.parent_id is None and s07.status == "stale" and s07.stale_from == "s07"
    assert {sid for sid, v in status(engine).items() if v[0] != "done"} == {"s07"}
