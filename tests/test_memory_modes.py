"""Memory modes through the engine: an IC-LoRA makes cuts reference sheets, a scene's own mode wins, and
``compare`` generates the same scenes under several modes as sibling takes without touching the timeline."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from support import harbor_story, new_engine, storygraph_cli

pytestmark = pytest.mark.slow

# an opening scene, a continuous transition, a cut to a character never seen, a cut to a character seen before
SHORT = (("s01-arrival", "s02-package", "s03-keeper", "s04-meeting"),
         (("s01-arrival", "s02-package", "continuous", None), ("s02-package", "s03-keeper", "cut", 0.5),
          ("s03-keeper", "s04-meeting", "cut", None)))


class Recorder:
    """The real generator, with every request it was given kept."""

    def __init__(self, gen):
        self.gen, self.requests = gen, []
        self.name = gen.name

    def generate(self, request):
        self.requests.append(request)
        return self.gen.generate(request)


@pytest.fixture(scope="module")
def ic_lora_runtime(tiny_config, tiny_runtime, tmp_path_factory):
    from storygraph.engine.generators.ltx2 import LTX2Generator
    from storygraph.engine.tiny.ltx2 import make_ic_lora

    lora = make_ic_lora(tiny_config.models.ltx2, tmp_path_factory.mktemp("ic-lora"))
    gen = LTX2Generator.from_pretrained(tiny_config.models.ltx2, device="cpu", ic_lora=lora)
    return {"generator": Recorder(gen), "encoders": tiny_runtime["encoders"], "lora": str(lora)}


def test_with_an_ic_lora_cuts_go_in_as_one_reference_sheet(tmp_path, tiny_config, ic_lora_runtime):
    from storygraph.engine.demo import STAND_INS, draw_stand_in

    story = harbor_story(*SHORT)
    mara = draw_stand_in(tmp_path / "story" / "refs" / "mara.png", STAND_INS["mara"])
    story = replace(story, characters=tuple(replace(c, reference_path=str(mara)) if c.id == "mara" else c
                                            for c in story.characters))
    rec = ic_lora_runtime["generator"]
    rec.requests.clear()
    e = new_engine(tmp_path / "story", tiny_config, ic_lora_runtime, story, models={"ic_lora": ic_lora_runtime["lora"]})
    try:
        e.run()
        requests = {r.prompt: r for r in rec.requests}
        by_scene = {sid: e.store.conditioned_on(sid) for sid in SHORT[0]}
        prompts = {sid: e.store.scene(sid).prompt for sid in SHORT[0]}
    finally:
        e.close()
    # the opening scene: Mara's reference image on a sheet (auto = reference with an IC-LoRA)
    assert [(r.role, r.mode, r.target_kind, r.target_id, r.frame_index) for r in by_scene["s01-arrival"]] == [
        ("memory", "reference", "Reference", str(mara), 0)]
    assert prompts["s01-arrival"].startswith("Reference Sheet Description. ")
    # continuous: the extension, no sheet (Mara was in the parent)
    assert [(r.role, r.mode) for r in by_scene["s02-package"]] == [("extension", "extend")]
    # a cut to Tomas, never seen, no reference image, no place image: nothing for a sheet -> the look as context
    assert [(r.role, r.mode, r.frame_index) for r in by_scene["s03-keeper"]] == [("look", "context", -8)]
    # a cut to Mara (remembered) and Ines (never seen): Mara's best appearances on the sheet
    s04 = by_scene["s04-meeting"]
    assert s04 and {(r.role, r.mode, r.target_kind, r.frame_index) for r in s04} == {
        ("memory", "reference", "Appearance", 0)}
    assert "Mara" in prompts["s04-meeting"].split(". ")[1]
    sheet_request = requests[prompts["s04-meeting"]]
    assert sheet_request.reference is not None and sheet_request.conditions == []
    sheet = sheet_request.reference.load()[0]
    assert sheet.shape == (64, 64, 3) and sheet_request.reference.loop
    extension = requests[prompts["s02-package"]]
    assert extension.reference is None
    # the extension is the parent's last 9 frames (one latent chunk + the causal first frame), in order
    (cond,) = extension.conditions
    assert (len(cond.frames), cond.index, cond.strength) == (9, 0, 1.0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_config, tiny_runtime):
    """A short story generated once (no IC-LoRA: cuts in context mode)."""
    d = tmp_path_factory.mktemp("compare") / "story"
    e = new_engine(d, tiny_config, tiny_runtime, harbor_story(*SHORT))
    e.run()
    yield d, e
    e.close()


def test_compare_makes_sibling_takes_and_leaves_the_timeline_alone(generated):
    d, e = generated
    scene = e.store.scene("s04-meeting")
    chosen = scene.chosen_take
    memory_before = {a.id: (a.strength, a.reinforced_clock, a.accepted)
                     for a in e.store.appearances(accepted_only=False, with_vectors=False)}
    result = e.compare(["context", "keyframe"], ["s04-meeting"])
    # the chosen take was made in context mode from the same seed: it is that mode's take; keyframe is new
    assert [(t.scene_id, t.mode, t.used, t.reused) for t in result.takes] == [
        ("s04-meeting", "context", "context", True), ("s04-meeting", "keyframe", "keyframe", False)]
    assert result.takes[0].take == chosen
    takes = {t.take: t for t in e.store.takes("s04-meeting")}
    assert len(takes) == 2 and [n for n, t in takes.items() if t.chosen] == [chosen]
    assert e.store.scene("s04-meeting").chosen_take == chosen
    # every mode was run from the chosen take's seed: only the mode differs
    assert {t.seed for t in result.takes} == {takes[chosen].seed}
    for t in result.takes:
        modes = {r.mode for r in e.store.conditioned_on("s04-meeting", take=t.take)}
        assert modes == {t.mode}
    keyed = e.store.conditioned_on("s04-meeting", take=result.takes[1].take)
    assert all(r.frame_index >= 0 for r in keyed)
    # nothing remembered changed: no reinforcement, the new takes' appearances are not memory
    after = {a.id: (a.strength, a.reinforced_clock, a.accepted)
             for a in e.store.appearances(accepted_only=False, with_vectors=False)}
    assert {k: v for k, v in after.items() if k in memory_before} == memory_before
    assert all(not v[2] for k, v in after.items() if k not in memory_before)
    # Mara was seen in s02 (two scenes back along the timeline), Ines never
    assert result.takes[0].gaps == {"mara": 2, "ines": None}
    assert result.random_weights and "random weights" in result.note
    table = result.by_mode()
    assert table["context"]["scenes"] == 1 and table["context"]["identity"] == pytest.approx(result.takes[0].identity)
    gaps = result.by_gap()
    assert gaps["2"]["keyframe"]["n"] == 1 and gaps["first"]["context"]["n"] == 1
    paths = result.write(d / "compare")
    data = json.loads(open(paths["json"]).read())
    assert data["random_weights"] and data["modes"] == ["context", "keyframe"] and len(data["takes"]) == 2
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the same comparison again makes nothing new
    again = e.compare(["keyframe", "context"], ["s04-meeting"])
    assert [t.reused for t in again.takes] == [True, True] and len(e.store.takes("s04-meeting")) == 2
    assert {t.take for t in again.takes} == {t.take for t in result.takes}


def test_compare_refuses_what_it_cannot_do(generated):
    from storygraph.engine.engine import InvalidRequest, SceneNotFound

    _, e = generated
    with pytest.raises(InvalidRequest, match="needs an IC-LoRA"):
        e.compare(["context", "reference"], ["s04-meeting"])
    with pytest.raises(InvalidRequest, match="unknown memory mode"):
        e.compare(["pixels"])
    with pytest.raises(SceneNotFound):
        e.compare(["context"], ["s99"])


def test_compare_from_the_command_line(tmp_path, tiny_config, tiny_runtime):
    d = tmp_path / "story"
    e = new_engine(d, tiny_config, tiny_runtime, harbor_story(SHORT[0][:2], SHORT[1][:1]))
    e.run()
    e.close()
    r = storygraph_cli("compare", "--dir", d, "--modes", "context,keyframe", "--scenes", "s02-package", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = " ".join(r.stdout.split())
    assert "random weights: these numbers show that every mode runs end to end" in out
    assert "context" in out and "keyframe" in out and (d / "compare" / "compare.png").is_file()
    bad = storygraph_cli("compare", "--dir", d, "--modes", "reference", timeout=120)
    assert bad.returncode == 2 and "needs an IC-LoRA" in bad.stderr
