"""Where every condition lands inside the model, for every memory mode.

A forward pre-hook on the tiny LTX-2.3 transformer (tests/probe.py) reads each token's time span, spatial extent
and conditioning strength from the pipeline's own inputs to the transformer. The plans come from the product
(``plan_conditioning``, ``LTX2Generator``); what the tokens must look like is written here from LTX-2's rules (a
64x64x17 clip is 3 latent frames of 2x2 tokens: latent 0 = pixel frame 0, latent 1 = frames 1-8, latent 2 = frames
9-16; a keyframe at frame 9 is appended at pixel frame 9; context memory k slots back covers [-8k, -8k + 1)).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from probe import Expect, TokenProbe, check  # noqa: E402
from storygraph.domain import Appearance, Candidate, Character, Environment, SceneSpec, Transition  # noqa: E402
from storygraph.engine import media  # noqa: E402
from storygraph.engine.conditioning import ConditioningParams, plan_conditioning  # noqa: E402
from storygraph.engine.generators import (  # noqa: E402
    ConditionInput,
    GenerationRequest,
    LTX2Generator,
    MemoryInput,
    ReferenceInput,
)

SIZE = dict(width=64, height=64, frames=17, steps=2, fps=24.0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from storygraph.engine.tiny.ltx2 import make_ltx2

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return make_ltx2(tmp_path_factory.mktemp("tiny-ltx23"), version="2.3", with_upsampler=False)


@pytest.fixture(scope="module")
def lora(tiny_dir, tmp_path_factory):
    from storygraph.engine.tiny.ltx2 import make_ic_lora

    return make_ic_lora(tiny_dir, tmp_path_factory.mktemp("ic-lora"))


@pytest.fixture(scope="module")
def gen(tiny_dir, lora):
    return LTX2Generator.from_pretrained(tiny_dir, device="cpu", ic_lora=lora)


def _image(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _req(**kw) -> GenerationRequest:
    return GenerationRequest(prompt="a woman walks along the harbor at night", **{"seed": 0, **SIZE, **kw})


def _layout(gen, req, keep_all: bool = False):
    with TokenProbe(gen.pipe, keep_all=keep_all) as probe:
        result = gen.generate(req)
    return probe, result


def _cand(app_id, cid, path, score):
    app = Appearance(id=app_id, character_id=cid, scene_id="s01", frame_index=0, frame_path=str(path), strength=1.0,
                     reinforced_clock=0.0, identity_score=0.9, clip=[], dino=[])
    return Candidate(appearance=app, score=score, relevance=0.8, retention=0.7, quality=0.9, identity=0.9)


# -- extend and keyframe ----------------------------------------------------------------------------------------
def test_continuous_extension_pins_the_first_two_latent_frames_and_nothing_else(gen):
    parent = [_image(i) for i in range(12)]
    scene = SceneSpec(id="s02", action="she keeps walking", characters=("mara",), **SIZE)
    plan = plan_conditioning(scene, Transition("s01", "s02", "continuous"), {}, parent, width=64, height=64)
    probe, result = _layout(gen, _req(conditions=plan.conditions))
    # 9 parent frames = the causal first frame + one 8-frame chunk: latent frames 0 and 1, clean; latent 2 is new
    check(probe.first, [Expect("extension", strength=1.0, n_frames=9)])
    assert probe.first.clip_frames() == {0: 1.0, 1: 1.0, 2: 0.0}
    assert result.frames.shape == (17, 64, 64, 3)


def test_keyframe_lands_on_its_latent_slot_with_its_strength(gen):
    key = ConditionInput([_image(1)], index=9, strength=0.6)
    probe, _ = _layout(gen, _req(conditions=[key]))
    check(probe.first, [Expect("keyframe", frame=9, strength=0.6)])
    (g,) = probe.first.appended()
    assert (g.t0, g.t1, g.strength, g.n_tokens) == (9.0, 10.0, 0.6, 4)


def test_keyframes_on_the_grid_after_an_extension(gen):
    """Frame 1 and frame 16 snap to latent 1 and latent 2: appended at pixel frames 1 and 9."""
    conds = [ConditionInput([_image(2)], index=1, strength=0.8), ConditionInput([_image(3)], index=16, strength=0.3)]
    probe, _ = _layout(gen, _req(conditions=conds))
    check(probe.first, [Expect("keyframe", frame=1, strength=0.8), Expect("keyframe", frame=16, strength=0.3)])


def test_keyframe_mode_plan_places_memory_in_the_clip(gen, tmp_path):
    path = media.save_image(tmp_path / "mara.png", _image(4))
    scene = SceneSpec(id="s03", action="she turns", characters=("mara",), **SIZE)
    params = ConditioningParams(memory_cut="keyframe", keyframe_index=9, keyframe_strength=0.6)
    plan = plan_conditioning(scene, Transition("s02", "s03", "cut"), {"mara": [_cand("a1", "mara", path, 0.9)]},
                             params=params, width=64, height=64)
    assert [(r.mode, r.frame_index, r.strength) for r in plan.records] == [("keyframe", 9, 0.6)]
    probe, _ = _layout(gen, _req(conditions=plan.conditions))
    check(probe.first, [Expect("keyframe", frame=9, strength=0.6)])


def test_a_negative_condition_index_counts_from_the_end_not_before_the_clip(gen):
    probe, _ = _layout(gen, _req(conditions=[ConditionInput([_image(5)], index=-1, strength=1.0)]))
    (g,) = probe.first.appended()
    assert g.t0 == 9.0 and g.t0 > 0  # the last latent slot: a memory needs a MemoryInput


# -- context -------------------------------------------------------------------------------------------------
def test_context_memory_sits_before_the_clip_clean_at_half_size(gen, tmp_path):
    """A cut in context mode: each character's best memory, the better one nearest the clip; nothing in the clip
    is pinned and the memory never becomes output frames."""
    mara = media.save_image(tmp_path / "mara.png", _image(6))
    tomas = media.save_image(tmp_path / "tomas.png", _image(7))
    memories = {"mara": [_cand("a-m", "mara", mara, 0.4)], "tomas": [_cand("a-t", "tomas", tomas, 0.9)]}
    scene = SceneSpec(id="s05", action="they meet", characters=("mara", "tomas"), **SIZE)
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), memories, width=64, height=64)
    assert plan.mode == "context"
    assert [(r.target_id, r.frame_index, r.strength, r.mode) for r in plan.records] == [
        ("a-t", -8, 1.0, "context"), ("a-m", -16, 1.0, "context")]
    probe, result = _layout(gen, _req(conditions=plan.conditions))
    check(probe.first, [Expect("memory", before=1, downscale=2), Expect("memory", before=2, downscale=2)])
    assert result.frames.shape == (17, 64, 64, 3)  # memory tokens are dropped before decoding


def test_context_memory_stays_clean_on_every_step(gen):
    probe, _ = _layout(gen, _req(conditions=[MemoryInput([_image(8)], before=1, downscale=2)]), keep_all=True)
    assert len(probe.calls) == 2
    for cap in probe.calls:
        (g,) = cap.appended()
        assert (g.t0, g.t1, g.strength) == (-8.0, -7.0, 1.0)


def test_full_size_memory_has_a_frames_worth_of_tokens(gen):
    probe, _ = _layout(gen, _req(conditions=[MemoryInput([_image(9)], before=3, downscale=1)]))
    check(probe.first, [Expect("memory", before=3, downscale=1)])


def test_look_across_a_cut_in_context_mode_is_weak_memory_before_the_clip(gen):
    parent = [_image(10 + i) for i in range(9)]
    scene = SceneSpec(id="s03", action="he wipes the window", characters=("tomas",), **SIZE)
    plan = plan_conditioning(scene, Transition("s02", "s03", "cut"), {"tomas": []}, parent, width=64, height=64)
    assert [(r.role, r.mode, r.frame_index, r.strength) for r in plan.records] == [("look", "context", -8, 0.2)]
    probe, _ = _layout(gen, _req(conditions=plan.conditions))
    check(probe.first, [Expect("memory", before=1, strength=0.2)])


def test_extend_mode_gives_a_newcomer_context_memory_beside_the_extension(gen, tmp_path):
    ref = media.save_image(tmp_path / "ines.png", _image(20))
    parent = [_image(30 + i) for i in range(9)]
    scene = SceneSpec(id="s05", action="Ines runs in", characters=("mara", "ines"), **SIZE)
    cast = [Character("mara", "Mara"), Character("ines", "Ines", reference_path=str(ref))]
    plan = plan_conditioning(scene, Transition("s04", "s05", "continuous"), {}, parent, width=64, height=64,
                             characters=cast, parent_characters=("mara",))
    assert [(r.role, r.mode, r.target_id, r.frame_index) for r in plan.records] == [
        ("extension", "extend", "s04", 0), ("memory", "context", str(ref), -8)]
    probe, _ = _layout(gen, _req(conditions=plan.conditions))
    check(probe.first, [Expect("extension", n_frames=9), Expect("memory", before=1, downscale=2)])


def test_memory_latents_are_cached_by_their_own_frames(tiny_dir, gen):
    """Two memories of one shape, one after the other, then again: the cache serves each its own latents."""
    a, b = _image(40), _image(41)
    fresh = LTX2Generator.from_pretrained(tiny_dir, device="cpu", cache_condition_latents=False)

    def memory_tokens(g, img):
        probe, result = _layout(g, _req(conditions=[MemoryInput([img], before=1, downscale=2)]))
        (mem,) = probe.first.appended()
        return probe.first.tokens_of(mem), result

    truth_a, _ = memory_tokens(fresh, a)
    truth_b, _ = memory_tokens(fresh, b)
    assert not torch.equal(truth_a, truth_b)
    got_a, first = memory_tokens(gen, a)
    got_b, second = memory_tokens(gen, b)
    again_a, third = memory_tokens(gen, a)
    assert torch.allclose(got_a, truth_a) and torch.allclose(got_b, truth_b) and torch.allclose(again_a, truth_a)
    assert second.settings["condition_cache_hits"] == 0 and third.settings["condition_cache_hits"] == 1
    # the same frames as a full-size keyframe are another entry: the memory was encoded at half size
    _, as_key = _layout(gen, _req(conditions=[ConditionInput([a], 9, 0.5)]))
    assert as_key.settings["condition_cache_hits"] == 0


# -- reference (IC-LoRA) ---------------------------------------------------------------------------------------
def _transformer_out(tr, seed: int = 0):
    """One forward of the transformer on fixed random inputs."""
    g = torch.Generator().manual_seed(seed)
    B, F, H, W, A, L = 1, 2, 2, 2, 5, 6
    c = tr.config
    S = F * H * W
    kw = dict(hidden_states=torch.randn(B, S, c.in_channels, generator=g),
              audio_hidden_states=torch.randn(B, A, c.audio_in_channels, generator=g),
              encoder_hidden_states=torch.randn(B, L, c.cross_attention_dim, generator=g),
              audio_encoder_hidden_states=torch.randn(B, L, c.audio_cross_attention_dim, generator=g),
              timestep=torch.full((B, S), 500.0), audio_timestep=torch.full((B,), 500.0),
              sigma=torch.full((B,), 500.0), encoder_attention_mask=torch.ones(B, L),
              audio_encoder_attention_mask=torch.ones(B, L), num_frames=F, height=H, width=W, fps=24.0,
              audio_num_frames=A, use_cross_timestep=True, return_dict=False)
    with torch.no_grad():
        return tr(**kw)[0]


def test_loading_the_ic_lora_changes_the_transformer_and_switching_it_off_restores_it(tiny_dir, lora):
    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", ic_lora=lora)
    base = _transformer_out(g.pipe.transformer)
    g.load_ic_lora()
    adapted = _transformer_out(g.pipe.transformer)
    assert (adapted - base).abs().max().item() > 1e-3
    wrapped = [n for n, m in g.pipe.transformer.named_modules() if hasattr(m, "lora_A")]
    assert len(wrapped) == 2 * 10 and not any("audio" in n for n in wrapped)  # video attention + FFN, 2 blocks
    plain = g.generate(_req(seed=3))  # a scene without a reference: the adapter is off
    assert torch.equal(_transformer_out(g.pipe.transformer), base)
    fresh = LTX2Generator.from_pretrained(tiny_dir, device="cpu").generate(_req(seed=3))
    assert np.array_equal(plain.frames, fresh.frames)


def test_reference_sheet_tokens_follow_the_clip_grid_from_time_zero(gen):
    sheet = _image(50)
    probe, result = _layout(gen, _req(reference=ReferenceInput([sheet], loop=True)))
    # the sheet looped to 17 frames: 3 latent frames of reference tokens at the clip's own times, clean, full size
    check(probe.first, [Expect("reference", latent_frames=3, downscale=1)])
    assert probe.first.clip_frames() == {0: 0.0, 1: 0.0, 2: 0.0}
    assert result.settings["reference"]["downscale_factor"] == 1 and result.frames.shape == (17, 64, 64, 3)
    probe, _ = _layout(gen, _req(reference=ReferenceInput([sheet], loop=False)))
    check(probe.first, [Expect("reference", latent_frames=1, downscale=1)])


def test_reference_downscale_factor_comes_from_the_lora_header(tiny_dir, tmp_path):
    from storygraph.engine.generators import read_reference_downscale_factor
    from storygraph.engine.tiny.ltx2 import make_ic_lora

    half = make_ic_lora(tiny_dir, tmp_path / "half", reference_downscale_factor=2)
    assert read_reference_downscale_factor(half) == 2
    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", ic_lora=half)
    probe, result = _layout(g, _req(reference=ReferenceInput([_image(51)], loop=True),
                                    conditions=[ConditionInput([_image(52)] * 9, 0, 1.0)]))
    check(probe.first, [Expect("extension", n_frames=9), Expect("reference", latent_frames=3, downscale=2)])
    assert result.settings["reference"]["downscale_factor"] == 2


def test_reference_and_context_memory_do_not_mix(gen):
    with pytest.raises(ValueError, match="no context memory"):
        gen.generate(_req(reference=ReferenceInput([_image(53)]), conditions=[MemoryInput([_image(54)])]))


def test_reference_mode_plan_composes_one_sheet(tmp_path):
    mara = [media.save_image(tmp_path / f"mara{i}.png", _image(60 + i)) for i in range(3)]
    pier = media.save_image(tmp_path / "pier.png", _image(70))
    cast = [Character("mara", "Mara", "copper-red hair, yellow raincoat"),
            Character("tomas", "Tomas", "white beard", reference_path=str(media.save_image(tmp_path / "t.png",
                                                                                            _image(71))))]
    memories = {"mara": [_cand(f"a{i}", "mara", p, 0.5 + i / 10) for i, p in enumerate(mara)]}
    scene = SceneSpec(id="s05", action="they meet", characters=("mara", "tomas"), **SIZE)
    plan = plan_conditioning(scene, Transition("s04", "s05", "cut"), memories, reference_available=True,
                             characters=cast, environment=Environment("pier", "a wooden pier", "The pier",
                                                                      str(pier)), width=64, height=64)
    assert plan.mode == "reference" and plan.conditions == []
    assert [(p.kind, len(p.images)) for p in plan.sheet.panels] == [("setting", 1), ("character", 2),
                                                                     ("character", 1)]
    # mara's two best appearances (scores 0.7 and 0.6), then tomas's reference image; all at time 0, clean
    assert [(r.role, r.target_id, r.mode, r.frame_index, r.strength) for r in plan.records] == [
        ("place", str(pier), "reference", 0, 1.0), ("memory", "a2", "reference", 0, 1.0),
        ("memory", "a1", "reference", 0, 1.0), ("memory", str(cast[1].reference_path), "reference", 0, 1.0)]
    assert "(Top Row Left)" in plan.records[0].reason
