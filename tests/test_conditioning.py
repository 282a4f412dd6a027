"""The conditioning plan: the memory mode of each scene, continuous extension, context memory, keyframes, reference
sheets, a character's reference image as memory, explicit references."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from storygraph.config import EngineConfig
from storygraph.domain import Appearance, Candidate, Character, Reference, SceneSpec, Transition
from storygraph.engine.conditioning import ConditioningParams, plan_conditioning, resolve_mode
from storygraph.engine.generators import ConditionInput, MemoryInput

KEYFRAME = ConditioningParams(memory_cut="keyframe", memory_time_skip="keyframe")


def _frames(n, seed=0, size=16):
    rs = np.random.RandomState(seed)
    return [(rs.rand(size, size, 3) * 255).astype(np.uint8) for _ in range(n)]


def _cand(app_id, cid, scene_id, score, rel=0.8, ret=0.7, q=0.9, path=None, terms=None, uses=0):
    app = Appearance(id=app_id, character_id=cid, scene_id=scene_id, frame_index=0,
                     frame_path=path or f"/media/{scene_id}/take-1/frames/0000.png", strength=1.0,
                     reinforced_clock=0.0, identity_score=q, clip=[], dino=[])
    return Candidate(appearance=app, score=score, relevance=rel, retention=ret, quality=q, identity=q,
                     terms=terms or (score, 0.0, 0.0), strength=1.0 + uses, uses=uses)


MEMORIES = {
    "mara": [_cand("a-mara-s01", "mara", "s01", 0.41),
             _cand("a-mara-s02", "mara", "s02", 0.87, 0.81, 0.74, 0.92, terms=(0.5, 0.245, 0.125), uses=1)],
    "tom": [_cand("a-tom-s01", "tom", "s01", 0.55, 0.6, 0.5, 0.7)],
}


def test_continuous_extends_from_the_parents_last_frames():
    parent = _frames(12)
    scene = SceneSpec(id="s04", action="she keeps walking", characters=("mara", "tom"), frames=121)
    plan = plan_conditioning(scene, Transition("s03", "s04", "continuous"), MEMORIES, parent)

    assert len(plan.conditions) == 1 and len(plan.records) == 1
    cond, rec = plan.conditions[0], plan.records[0]
    assert len(cond.frames) == 9
    assert all(np.array_equal(a, b) for a, b in zip(cond.frames, parent[-9:]))  # the LAST nine, in order
    assert (cond.index, cond.strength) == (0, 1.0)
    assert (rec.role, rec.target_kind, rec.target_id, rec.frame_index, rec.score) == ("extension", "Scene", "s03", 0, None)
    assert rec.reason == "continuous from s03: its last 9 frames at index 0, strength 1.0"


def test_cut_in_keyframe_mode_uses_each_characters_top_memory_as_a_keyframe():
    scene = SceneSpec(id="s05", action="they meet at the harbor", characters=("tom", "mara", "ines"), frames=121)
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, _frames(12), params=KEYFRAME)

    assert [(r.role, r.mode) for r in plan.records] == [("memory", "keyframe")] * 2  # no extension on a cut
    by_target = {r.target_id: (r, c) for r, c in zip(plan.records, plan.conditions)}
    mara_rec, mara_cond = by_target["a-mara-s02"]  # the higher-scoring of mara's two candidates
    tom_rec, tom_cond = by_target["a-tom-s01"]
    assert mara_cond.frames == [MEMORIES["mara"][1].frame_path]
    # mara scores higher, so she takes frame 0; tom goes to the next latent slot (frame 1)
    assert (mara_rec.frame_index, tom_rec.frame_index) == (0, 1)
    assert (mara_cond.index, tom_cond.index) == (0, 1)
    assert mara_rec.strength == pytest.approx(0.6) and mara_cond.strength == pytest.approx(0.6)
    assert mara_rec.score == pytest.approx(0.87) and mara_rec.target_kind == "Appearance"
    # the parts of the score add up to it as shown (0.50 + 0.25 + 0.12 = 0.87), then the raw values behind them
    assert mara_rec.reason == ("cut: mara's nearest prior appearance (scene s02, score 0.87 = relevance 0.50 + "
                               "retention 0.25 + quality 0.12 (text+identity 0.81, retention 0.74 at memory strength "
                               "2.00 after 1 use on this timeline, identity 0.92)) as a keyframe at index 0, strength 0.6")
    assert plan.notes == ["cut: no prior appearance of ines on this timeline and no reference image"]


def test_time_skip_in_keyframe_mode_lowers_strength_and_says_so():
    scene = SceneSpec(id="s06", action="years later", characters=("mara",))
    plan = plan_conditioning(scene, Transition("s05", "s06", "time_skip", gap=10), MEMORIES, None,
                             names={"mara": "Mara"}, params=KEYFRAME)
    (rec,) = plan.records
    assert rec.strength == pytest.approx(0.5)
    assert rec.reason.startswith("time skip (gap 10): Mara's nearest prior appearance (scene s02, score 0.87")


def test_character_reference_replaces_retrieved_memory(tmp_path):
    ref = Reference(path="refs/mara_coat.png", kind="costume", character="mara", frame_index=0, strength=0.9)
    scene = SceneSpec(id="s05", action="", characters=("mara", "tom"), references=(ref,))
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, None, base_dir=tmp_path,
                             params=KEYFRAME)

    assert [(r.role, r.mode) for r in plan.records] == [("reference", "keyframe"), ("memory", "keyframe")]
    ref_rec, tom_rec = plan.records
    assert ref_rec.target_id == "refs/mara_coat.png" and ref_rec.frame_index == 0
    assert plan.conditions[0].frames == [str(tmp_path / "refs/mara_coat.png")]
    assert plan.conditions[0].strength == pytest.approx(0.9)
    assert "replaces mara's memory" in ref_rec.reason
    assert tom_rec.target_id == "a-tom-s01" and tom_rec.frame_index == 1  # frame 0 belongs to the reference
    assert all(r.target_id not in ("a-mara-s01", "a-mara-s02") for r in plan.records)


def test_reference_on_a_continuous_scene_goes_after_the_extension():
    ref = Reference(path="/abs/harbor.png", kind="place", frame_index=0, strength=0.7)
    scene = SceneSpec(id="s04", action="", characters=("mara",), references=(ref,))
    plan = plan_conditioning(scene, Transition("s03", "s04", "continuous"), MEMORIES, _frames(9), frames=121)
    assert [r.role for r in plan.records] == ["extension", "reference"]
    assert plan.records[1].frame_index == 9 and plan.conditions[1].index == 9
    assert "extension holds frames 0-8" in plan.records[1].reason


def test_extension_frames_follow_the_latent_grid_and_config():
    parent = _frames(30)
    scene = SceneSpec(id="s02", action="", frames=121)
    params = ConditioningParams(extension_frames=20, extension_strength=0.8)
    plan = plan_conditioning(scene, Transition("s01", "s02", "continuous"), {}, parent, params=params)
    assert len(plan.conditions[0].frames) == 17  # 20 rounded down to 8k+1
    assert plan.records[0].strength == pytest.approx(0.8)
    # fewer frames than asked for: what there is, on the grid
    plan = plan_conditioning(scene, Transition("s01", "s02", "continuous"), {}, parent[:5])
    assert len(plan.conditions[0].frames) == 1
    # a continuous transition without the parent's frames is noted, not silently dropped
    plan = plan_conditioning(scene, Transition("s01", "s02", "continuous"), {}, None)
    assert plan.conditions == [] and "last frames are missing" in plan.notes[0]


def test_params_from_engine_config_and_short_scenes():
    cfg = EngineConfig(extension_frames=17, keyframe_strength=0.4, keyframe_index=9)
    params = ConditioningParams.from_config(cfg)
    assert (params.extension_frames, params.keyframe_strength, params.keyframe_index) == (17, 0.4, 9)
    scene = SceneSpec(id="s05", action="", characters=("mara", "tom"), frames=9)  # a single latent chunk after 0
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, None, mode="keyframe", params=params)
    # index 9 is past a 9-frame scene: both keyframes land on the last position there is (frame 1)
    assert [r.frame_index for r in plan.records] == [1, 1]
    assert [r.strength for r in plan.records] == [pytest.approx(0.4)] * 2


def test_cut_without_memory_carries_the_parents_look_weakly():
    spec = SceneSpec("s3", "wipes the window", ("tomas",), frames=121)
    parent = _frames(9, seed=3)
    cut = Transition("s2", "s3", "cut")
    for mode, where, kind in (("keyframe", 0, ConditionInput), ("context", -8, MemoryInput)):
        plan = plan_conditioning(spec, cut, {"tomas": []}, parent, mode=mode)
        assert [(r.role, r.mode) for r in plan.records] == [("look", mode)]
        rec, cond = plan.records[0], plan.conditions[0]
        assert (rec.target_kind, rec.target_id, rec.frame_index, rec.strength) == ("Scene", "s2", where, 0.2)
        assert isinstance(cond, kind) and np.array_equal(cond.frames[0], parent[-1]) and cond.strength == 0.2
    assert plan.conditions[0].before == 1 and plan.conditions[0].downscale == 1
    # with memory there is no look condition, and the knob turns it off
    memory = {"tomas": [_cand("a1", "tomas", "s1", 0.9)]}
    assert "look" not in [r.role for r in plan_conditioning(spec, cut, memory, parent).records]
    off = plan_conditioning(spec, cut, {}, parent, params=ConditioningParams(look_strength=0))
    assert off.records == [] and off.conditions == []


# -- memory modes -------------------------------------------------------------------------------------------------
def test_mode_per_transition_kind_with_auto_and_overrides():
    p = ConditioningParams()
    scene = SceneSpec("s", "x")
    assert resolve_mode(scene, "continuous", p, False) == ("extend", [])
    assert resolve_mode(scene, "cut", p, False) == ("context", [])
    assert resolve_mode(scene, "cut", p, True) == ("reference", [])  # auto: reference when an IC-LoRA is there
    assert resolve_mode(scene, "time_skip", p, True) == ("reference", [])
    assert resolve_mode(scene, None, p, False) == ("context", [])  # an opening scene is a new shot, like a cut
    keyed = ConditioningParams(memory_cut="keyframe", memory_time_skip="context")
    assert resolve_mode(scene, "cut", keyed, True)[0] == "keyframe"
    assert resolve_mode(scene, "time_skip", keyed, True)[0] == "context"
    # the scene's own memory wins over the config, a plan's override over both
    assert resolve_mode(SceneSpec("s", "x", memory="keyframe"), "cut", p, True)[0] == "keyframe"
    assert resolve_mode(SceneSpec("s", "x", memory="keyframe"), "cut", p, True, override="context")[0] == "context"
    # what cannot be done falls back to context, and says so
    mode, notes = resolve_mode(SceneSpec("s", "x", memory="reference"), "cut", p, False)
    assert mode == "context" and notes == ["memory mode reference (the scene's memory) needs an IC-LoRA "
                                           "([models] ic_lora); used context"]
    mode, notes = resolve_mode(SceneSpec("s", "x", memory="extend"), "cut", p, False)
    assert mode == "context" and "needs a continuous transition" in notes[0]
    with pytest.raises(ValueError, match="unknown memory mode"):
        resolve_mode(scene, "cut", p, False, override="pixels")


def test_cut_in_context_mode_puts_memory_before_the_clip_best_first():
    scene = SceneSpec(id="s05", action="they meet", characters=("tom", "mara", "ines"), frames=121, width=768,
                      height=512)
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, _frames(12))
    assert plan.mode == "context"
    assert [(r.role, r.mode, r.target_id, r.frame_index, r.strength) for r in plan.records] == [
        ("memory", "context", "a-mara-s02", -8, 1.0), ("memory", "context", "a-tom-s01", -16, 1.0)]
    assert all(isinstance(c, MemoryInput) for c in plan.conditions)
    assert [(c.before, c.downscale, c.strength) for c in plan.conditions] == [(1, 2, 1.0), (2, 2, 1.0)]
    assert plan.conditions[0].frames == [MEMORIES["mara"][1].frame_path]
    assert plan.records[0].reason == (
        "cut: mara's nearest prior appearance (scene s02, score 0.87 = relevance 0.50 + retention 0.25 + quality 0.12 "
        "(text+identity 0.81, retention 0.74 at memory strength 2.00 after 1 use on this timeline, identity 0.92)) "
        "as context memory 1 latent slot before the clip (frames [-8, -7)), half size, strength 1.0")
    assert plan.notes == ["cut: no prior appearance of ines on this timeline and no reference image"]


def test_context_memory_is_capped_and_its_size_fits_the_frame():
    scene = SceneSpec(id="s05", action="", characters=("tom", "mara"), frames=17, width=96, height=64)
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, None,
                             params=ConditioningParams(max_context=1))
    assert [r.target_id for r in plan.records] == ["a-mara-s02"]
    assert plan.notes == ["cut: tom's memory left out (max_context=1)"]
    # 96x64 halves to 48x32: not on the 32-pixel grid, so the memory stays full size (and says so)
    assert plan.conditions[0].downscale == 1 and "full size" in plan.records[0].reason
    quarter = plan_conditioning(SceneSpec(id="s", action="", characters=("mara",), width=768, height=512),
                                Transition("a", "s", "cut"), MEMORIES, params=ConditioningParams(context_downscale=4))
    assert quarter.conditions[0].downscale == 4 and "1/4 size" in quarter.records[0].reason


def test_a_characters_reference_image_is_memory_from_its_first_scene(tmp_path):
    cast = [Character("ines", "Ines", "a girl in a red windbreaker", reference_path="refs/ines.png"),
            Character("mara", "Mara")]
    scene = SceneSpec(id="s01", action="they walk", characters=("ines", "mara"), width=768, height=512)
    plan = plan_conditioning(scene, None, {}, characters=cast, base_dir=tmp_path)  # an opening scene
    (rec,) = plan.records
    assert (rec.role, rec.mode, rec.target_kind, rec.target_id, rec.frame_index) == (
        "memory", "context", "Reference", "refs/ines.png", -8)
    assert plan.conditions[0].frames == [str(tmp_path / "refs/ines.png")]
    assert "Ines's reference image refs/ines.png (no prior appearance on this timeline)" in rec.reason
    # once she has been seen, her best appearance is the memory, not the reference image
    seen = {"ines": [_cand("a-ines", "ines", "s01", 0.7)]}
    later = plan_conditioning(replace(scene, id="s02"), Transition("s01", "s02", "cut"), seen, characters=cast,
                              base_dir=tmp_path, mode="keyframe")
    assert [(r.target_kind, r.target_id, r.mode) for r in later.records] == [("Appearance", "a-ines", "keyframe")]


def test_extend_mode_leaves_the_parents_cast_to_the_extension():
    parent = _frames(9)
    scene = SceneSpec(id="s05", action="", characters=("mara", "tom"), frames=121, width=768, height=512)
    both = plan_conditioning(scene, Transition("s04", "s05", "continuous"), MEMORIES, parent,
                             parent_characters=("mara", "tom"))
    assert [(r.role, r.mode) for r in both.records] == [("extension", "extend")]
    new = plan_conditioning(scene, Transition("s04", "s05", "continuous"), MEMORIES, parent,
                            parent_characters=("mara",))
    assert [(r.role, r.mode, r.target_id, r.frame_index) for r in new.records] == [
        ("extension", "extend", "s04", 0), ("memory", "context", "a-tom-s01", -8)]
    # a continuous scene in another mode keeps its extension and gives every character memory that way
    keyed = plan_conditioning(replace(scene, memory="keyframe"), Transition("s04", "s05", "continuous"), MEMORIES,
                              parent, parent_characters=("mara", "tom"))
    assert [(r.role, r.mode, r.frame_index) for r in keyed.records] == [
        ("extension", "extend", 0), ("memory", "keyframe", 9), ("memory", "keyframe", 9)]


def test_reference_mode_without_anything_to_show_falls_back_to_the_look_as_context():
    spec = SceneSpec("s3", "wipes the window", ("tomas",), frames=121, width=768, height=512)
    plan = plan_conditioning(spec, Transition("s2", "s3", "cut"), {}, _frames(9), reference_available=True)
    assert plan.mode == "context" and plan.sheet is None
    assert [(r.role, r.mode) for r in plan.records] == [("look", "context")]
    assert "nothing remembered for a reference sheet" in plan.notes[-1]
