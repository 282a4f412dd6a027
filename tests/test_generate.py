"""LTX-2 generation on the CPU with a tiny random pipeline saved and loaded through from_pretrained."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from storygraph.domain import Transition, SceneSpec  # noqa: E402
from storygraph.engine import media  # noqa: E402
from storygraph.engine.conditioning import plan_conditioning  # noqa: E402
from storygraph.engine.encoders import ModelNotFound  # noqa: E402
from storygraph.engine.generators import (  # noqa: E402
    ConditionInput,
    GenerationFailed,
    GenerationRequest,
    Generator,
    LTX2Generator,
)

SIZE = dict(width=32, height=32, frames=17, steps=2)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from storygraph.engine.tiny.ltx2 import make_ltx2

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return make_ltx2(tmp_path_factory.mktemp("tiny-ltx2"))


@pytest.fixture(scope="module")
def gen(tiny_dir):
    return LTX2Generator.from_pretrained(tiny_dir, device="cpu")


def _req(**kw):
    base = dict(prompt="a woman in a red coat walks in the rain", seed=0, **SIZE)
    base.update(kw)
    return GenerationRequest(**base)


def _smooth_image(seed, size=32):
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    return (np.stack([xx, yy, 1 - xx], -1) * 255 * rs.uniform(0.4, 1.0)).astype(np.uint8)


def _vae_roundtrip(pipe, frames):
    """decode(encode(frames)) with the pipeline's own VAE, as uint8 (F, H, W, 3)."""
    x = torch.from_numpy(np.stack(frames)).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mode()
        y = pipe.vae.decode(z).sample
    return ((y[0].permute(1, 2, 3, 0).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)


def test_scene_generates_end_to_end_and_writes_a_take(gen, tmp_path):
    assert isinstance(gen, Generator)
    res = gen.generate(_req())
    assert res.frames.shape == (17, 32, 32, 3) and res.frames.dtype == np.uint8
    assert res.frames.std() > 0  # pictures, not a constant
    assert res.audio is not None and res.audio.samples.ndim == 2 and res.audio.sample_rate == 16000
    for key in ("denoise_s", "vae_encode_s", "vae_decode_s", "text_encode_s", "total_s"):
        assert res.timings[key] >= 0.0
    assert res.timings["denoise_s"] > 0 and res.timings["vae_decode_s"] > 0
    assert res.timings["total_s"] >= res.timings["denoise_s"] + res.timings["vae_decode_s"]
    assert res.peak_gib and res.peak_gib > 0
    assert res.attempts == [] and res.settings["preset"] == "distilled"

    tm = media.write_take(media.take_dir(tmp_path, "s01", 1), res, fps=24, last_n=9)
    info = media.video_info(tm.video_path)
    assert info["frames"] == 17 and info["audio"] is not None
    assert np.array_equal(media.load_image(tm.last_frame_path), res.frames[-1])
    assert len(media.read_last_frames(tm.take_dir)) == 9


def test_same_seed_same_scene_and_seed_matters(gen):
    a, b, c = gen.generate(_req(seed=3)), gen.generate(_req(seed=3)), gen.generate(_req(seed=4))
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_condition_at_index_zero_pulls_the_first_frame_towards_it(gen):
    # Random VAE weights cannot reproduce pixels, so "the condition" is measured as the VAE's own
    # reconstruction of it: the closest any output of this decoder can come to those frames. (Where exactly the
    # condition's tokens sit, and how strongly, is what tests/test_token_layout.py checks.)
    for seed in (0, 2):
        cond = [_smooth_image(seed)] * 9
        target = _vae_roundtrip(gen.pipe, cond)[0]
        plain = gen.generate(_req(seed=seed))
        conditioned = gen.generate(_req(seed=seed, conditions=[ConditionInput(cond, index=0, strength=1.0)]))
        d_plain = media.mse(plain.frames[0], target)
        d_cond = media.mse(conditioned.frames[0], target)
        assert d_cond < 0.9 * d_plain, (seed, d_cond, d_plain)
        # the 9 condition frames fill the first two latents; beyond them the scene is the model's own
        assert not np.array_equal(conditioned.frames[-1], conditioned.frames[0])


def test_condition_latents_are_cached_by_content(gen):
    cond = ConditionInput([_smooth_image(7)] * 9, index=0, strength=1.0)
    first = gen.generate(_req(seed=5, conditions=[cond]))
    again = gen.generate(_req(seed=5, conditions=[ConditionInput([_smooth_image(7)] * 9)]))
    assert first.settings["condition_cache_hits"] == 0 and first.timings["vae_encode_s"] > 0
    assert again.settings["condition_cache_hits"] == 1 and again.timings["vae_encode_s"] == 0.0
    assert np.array_equal(first.frames, again.frames)
    other = gen.generate(_req(seed=5, conditions=[ConditionInput([_smooth_image(8)] * 9)]))
    assert other.settings["condition_cache_hits"] == 0


def test_keyframe_condition_later_in_the_scene(gen):
    key = ConditionInput([_smooth_image(2)], index=9, strength=0.6)
    res = gen.generate(_req(seed=2, conditions=[key]))
    plain = gen.generate(_req(seed=2))
    assert res.frames.shape == plain.frames.shape
    assert not np.array_equal(res.frames, plain.frames)


def test_injected_out_of_memory_is_retried_and_the_scene_completes(tiny_dir):
    calls = []

    def oom_once(step):
        calls.append(step)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", on_step=oom_once)
    res = g.generate(_req(seed=1))
    assert res.frames.shape == (17, 32, 32, 3)
    assert len(res.attempts) == 1
    assert "out of memory at 32x32x17 during denoise" in res.attempts[0]
    assert "VAE tiling" in res.attempts[0] and g.pipe.vae.use_tiling
    # the retry ran the whole scene again: same seed, same frames as an untroubled run
    clean = LTX2Generator.from_pretrained(tiny_dir, device="cpu").generate(_req(seed=1))
    assert np.array_equal(res.frames, clean.frames)


def test_repeated_out_of_memory_lowers_the_size_then_gives_up(tiny_dir):
    n = {"calls": 0}

    def oom_twice(step):
        n["calls"] += 1
        if n["calls"] <= 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", on_step=oom_twice)
    res = g.generate(_req(width=64, height=64))
    assert len(res.attempts) == 2
    assert "VAE tiling" in res.attempts[0]
    assert "a lower size 32x32 (was 64x64)" in res.attempts[1]  # no offload on a CPU: straight to smaller
    assert (res.width, res.height, res.num_frames) == (32, 32, 17)

    def always(step):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", on_step=always, max_downsizes=2)
    with pytest.raises(GenerationFailed) as info:
        g.generate(_req(width=64, height=64))
    tried = info.value.attempts
    assert [("tiling" in a, "lower size" in a, "fewer frames" in a) for a in tried[:3]] == [
        (True, False, False), (False, True, False), (False, False, True)]
    assert "nothing left to try" in tried[-1]


def test_two_stage_with_the_latent_upsampler(tiny_dir):
    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", upsampler=True)
    res = g.generate(_req(width=64, height=64, conditions=[ConditionInput([_smooth_image(1)] * 9)]))
    assert res.frames.shape == (17, 64, 64, 3)
    assert res.settings["stages"] == 2 and res.timings["upsample_s"] > 0
    assert res.timings["vae_encode_s"] > 0  # the condition is encoded at both sizes


def test_full_preset_with_guidance_runs(tiny_dir):
    g = LTX2Generator.from_pretrained(tiny_dir, device="cpu", preset="full")
    req = g.preset.request("a man on a boat", negative_prompt="blurry", width=32, height=32, frames=9, steps=2)
    assert req.guidance > 1.0
    res = g.generate(req)
    assert res.frames.shape == (9, 32, 32, 3) and res.settings["guidance"] == req.guidance


def test_sizes_are_normalised_to_what_ltx2_accepts(gen):
    res = gen.generate(_req(width=40, height=50, frames=20))
    assert (res.width, res.height, res.num_frames) == (32, 32, 17)
    assert res.settings["requested"] == "40x50x20"


def test_continuous_plan_feeds_the_generator(gen, tmp_path):
    parent = gen.generate(_req(seed=11))
    tm = media.write_take(media.take_dir(tmp_path, "s01", 1), parent, fps=24, last_n=9)
    scene = SceneSpec(id="s02", action="she keeps walking", characters=("mara",), frames=17)
    plan = plan_conditioning(scene, Transition("s01", "s02", "continuous"), {}, media.read_last_frames(tm.take_dir))
    assert plan.records[0].reason == "continuous from s01: its last 9 frames at index 0, strength 1.0"
    child = gen.generate(_req(seed=12, conditions=plan.conditions))
    free = gen.generate(_req(seed=12))
    target = _vae_roundtrip(gen.pipe, list(parent.frames[-9:]))[0]
    assert media.mse(child.frames[0], target) < media.mse(free.frames[0], target)


def test_missing_weights_say_what_to_download(tmp_path):
    with pytest.raises(ModelNotFound) as info:
        LTX2Generator.from_pretrained(tmp_path / "no-such-folder", device="cpu")
    msg = str(info.value)
    assert "hf download Lightricks/LTX-2" in msg and "storygraph.toml" in msg and "ltx2 = " in msg
    assert "diffusers form" in msg
    (tmp_path / "not-diffusers").mkdir()
    with pytest.raises(ModelNotFound) as info:
        LTX2Generator.from_pretrained(tmp_path / "not-diffusers", device="cpu")
    assert "diffusers form" in str(info.value)


def test_condition_input_validates_and_loads(tmp_path):
    img = _smooth_image(0)
    path = media.save_image(tmp_path / "k.png", img)
    c = ConditionInput([path, img], index=3, strength=0.5)
    arr = c.load()
    assert arr.shape == (2, 32, 32, 3) and np.array_equal(arr[0], img) and np.array_equal(arr[1], img)
    assert ConditionInput.digest(arr) == ConditionInput.digest(arr.copy())
    assert ConditionInput.digest(arr) != ConditionInput.digest(arr[:1])
    with pytest.raises(ValueError):
        ConditionInput([img], strength=1.5)
    with pytest.raises(ValueError):
        ConditionInput([])
    assert replace(_req(), seed=9).seed == 9
