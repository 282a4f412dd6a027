"""The conditioning plan: continuous extension, keyframes from retrieved memory, explicit references."""

from __future__ import annotations

import numpy as np
import pytest

from storygraph.config import EngineConfig
from storygraph.domain import Appearance, Candidate, Reference, SceneSpec, Transition
from storygraph.engine.conditioning import ConditioningParams, plan_conditioning


def _frames(n, seed=0, size=16):
    rs = np.random.RandomState(seed)
    return [(rs.rand(size, size, 3) * 255).astype(np.uint8) for _ in range(n)]


def _cand(app_id, cid, scene_id, score, rel=0.8, ret=0.7, q=0.9, path=None):
    app = Appearance(id=app_id, character_id=cid, scene_id=scene_id, frame_index=0,
                     frame_path=path or f"/media/{scene_id}/take-1/frames/0000.png", strength=1.0,
                     reinforced_clock=0.0, identity_score=q, clip=[], dino=[])
    return Candidate(appearance=app, score=score, relevance=rel, retention=ret, quality=q, identity=q)


MEMORIES = {
    "mara": [_cand("a-mara-s01", "mara", "s01", 0.41), _cand("a-mara-s02", "mara", "s02", 0.87, 0.81, 0.74, 0.92)],
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


def test_cut_uses_each_characters_top_memory_as_a_keyframe():
    scene = SceneSpec(id="s05", action="they meet at the harbor", characters=("tom", "mara", "ines"), frames=121)
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, _frames(12))

    roles = [r.role for r in plan.records]
    assert roles == ["keyframe", "keyframe"]  # no extension on a cut, even with parent frames at hand
    by_target = {r.target_id: (r, c) for r, c in zip(plan.records, plan.conditions)}
    mara_rec, mara_cond = by_target["a-mara-s02"]  # the higher-scoring of mara's two candidates
    tom_rec, tom_cond = by_target["a-tom-s01"]
    assert mara_cond.frames == [MEMORIES["mara"][1].frame_path]
    # mara scores higher, so she takes frame 0; tom goes to the next latent slot (frame 1)
    assert (mara_rec.frame_index, tom_rec.frame_index) == (0, 1)
    assert (mara_cond.index, tom_cond.index) == (0, 1)
    assert mara_rec.strength == pytest.approx(0.6) and mara_cond.strength == pytest.approx(0.6)
    assert mara_rec.score == pytest.approx(0.87) and mara_rec.target_kind == "Appearance"
    assert mara_rec.reason == ("cut: mara's nearest prior appearance (scene s02, score 0.87: relevance 0.81, "
                               "retention 0.74, quality 0.92) at index 0, strength 0.6")
    assert plan.notes == ["cut: no prior appearance of ines on this timeline"]


def test_time_skip_lowers_strength_and_says_so():
    scene = SceneSpec(id="s06", action="years later", characters=("mara",))
    plan = plan_conditioning(scene, Transition("s05", "s06", "time_skip", gap=10), MEMORIES, None,
                             names={"mara": "Mara"})
    (rec,) = plan.records
    assert rec.strength == pytest.approx(0.5)
    assert rec.reason.startswith("time skip (gap 10): Mara's nearest prior appearance (scene s02, score 0.87")


def test_character_reference_replaces_retrieved_memory(tmp_path):
    ref = Reference(path="refs/mara_coat.png", kind="costume", character="mara", frame_index=0, strength=0.9)
    scene = SceneSpec(id="s05", action="", characters=("mara", "tom"), references=(ref,))
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, None, base_dir=tmp_path)

    assert [r.role for r in plan.records] == ["reference", "keyframe"]
    ref_rec, tom_rec = plan.records
    assert ref_rec.target_id == "refs/mara_coat.png" and ref_rec.frame_index == 0
    assert plan.conditions[0].frames == [str(tmp_path / "refs/mara_coat.png")]
    assert plan.conditions[0].strength == pytest.approx(0.9)
    assert "replaces mara's retrieved memory" in ref_rec.reason
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
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), MEMORIES, None, params=params)
    # index 9 is past a 9-frame scene: both keyframes land on the last position there is (frame 1)
    assert [r.frame_index for r in plan.records] == [1, 1]
    assert [r.strength for r in plan.records] == [pytest.approx(0.4)] * 2


def test_cut_without_memory_carries_the_parents_look_weakly():
    spec = SceneSpec("s3", "wipes the window", ("tomas",), frames=121)
    parent = _frames(9, seed=3)
    plan = plan_conditioning(spec, Transition("s2", "s3", "cut"), {"tomas": []}, parent)
    assert [r.role for r in plan.records] == ["look"]
    rec, cond = plan.records[0], plan.conditions[0]
    assert (rec.target_kind, rec.target_id, rec.frame_index, rec.strength) == ("Scene", "s2", 0, 0.2)
    assert np.array_equal(cond.frames[0], parent[-1]) and cond.strength == 0.2
    # with memory there is no look condition, and the knob turns it off
    memory = {"tomas": [_cand("a1", "tomas", "s1", 0.9)]}
    assert "look" not in [r.role for r in plan_conditioning(spec, Transition("s2", "s3", "cut"), memory, parent).records]
    off = plan_conditioning(spec, Transition("s2", "s3", "cut"), {}, parent, params=ConditioningParams(look_strength=0))
    assert off.records == [] and off.conditions == []
