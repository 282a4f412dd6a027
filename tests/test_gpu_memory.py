"""Where LTX-2's parts live under a GPU memory budget, the out-of-memory ladder's order, the prompt-encoding cache,
and the encoder speed settings reaching the engine's encoders from storygraph.toml."""

from __future__ import annotations

import pytest

from storygraph.engine.generators.gpu_memory import (
    GIB,
    Placement,
    PromptCache,
    activation_reserve,
    next_rung,
    plan_placement,
)

# LTX-2 at its published size (GiB): what bench/e2e.py builds
SIZES = {"transformer": 35 * GIB, "text_encoder": 23 * GIB, "connectors": 3 * GIB, "vae": 2 * GIB}
RESERVE = activation_reserve(768, 512, 121)


@pytest.mark.parametrize("card_gib, expected", [
    (141, Placement("gpu", "gpu")),  # everything resident: 63 + 6
    (80, Placement("gpu", "gpu")),
    (48, Placement("stream", "gpu")),  # 40 + 6 fits, 63 + 6 does not: the text encoder streams
    (24, Placement("stream", "stream")),  # 5 + 6 fits only with both large parts streamed
    (8, Placement("stream", "stream")),  # nothing fits: the most frugal placement, the ladder goes on from there
])
def test_placement_is_the_first_that_fits(card_gib, expected):
    assert plan_placement(SIZES, card_gib * GIB, RESERVE) == expected


def test_placement_boundary_is_exact():
    resident_all = sum(SIZES.values()) + RESERVE
    assert plan_placement(SIZES, resident_all, RESERVE) == Placement("gpu", "gpu")
    assert plan_placement(SIZES, resident_all - 1, RESERVE) == Placement("stream", "gpu")
    without_te = resident_all - SIZES["text_encoder"]
    assert plan_placement(SIZES, without_te, RESERVE) == Placement("stream", "gpu")
    # the transformer streams (every step reads it) only when it must; then the text encoder stays if it fits
    assert plan_placement(SIZES, without_te - 1, RESERVE) == Placement("gpu", "stream")
    without_tr = resident_all - SIZES["transformer"]
    assert plan_placement(SIZES, without_tr, RESERVE) == Placement("gpu", "stream")
    assert plan_placement(SIZES, without_tr - 1, RESERVE) == Placement("stream", "stream")


def test_a_forced_text_encoder_placement_is_kept():
    # on the GPU by request: the transformer streams instead when both do not fit
    assert plan_placement(SIZES, 70 * GIB, RESERVE, "gpu") == Placement("gpu", "gpu")
    assert plan_placement(SIZES, 48 * GIB, RESERVE, "gpu") == Placement("gpu", "stream")
    assert plan_placement(SIZES, 141 * GIB, RESERVE, "stream") == Placement("stream", "gpu")
    with pytest.raises(ValueError):
        plan_placement(SIZES, 80 * GIB, RESERVE, "cpu")


def test_reserve_scales_with_the_request():
    assert activation_reserve(768, 512, 121) == 6 * GIB
    assert activation_reserve(1536, 1024, 121) == 24 * GIB
    assert activation_reserve(64, 64, 9) == 2 * GIB  # a floor for the pipeline's own buffers


def test_the_ladder_gives_up_the_cheapest_thing_first():
    steps, placement, tiling = [], Placement("gpu", "gpu"), False
    while (step := next_rung(placement, tiling)) is not None:
        what, placement, tiling = step
        steps.append((what, placement, tiling))
    assert steps == [
        ("VAE tiling", Placement("gpu", "gpu"), True),
        ("text encoder streamed from the CPU", Placement("stream", "gpu"), True),
        ("transformer streamed from the CPU", Placement("stream", "stream"), True),
    ]
    # a placement that starts lower skips what it already gave up
    assert next_rung(Placement("stream", "gpu"), True)[1] == Placement("stream", "stream")


def test_prompt_cache_keys_and_evicts():
    cache = PromptCache(size=2)
    a = cache.key("a woman walks", "blurry", cfg=False, max_len=1024)
    # without guidance the negative prompt is not encoded, so it does not split the key
    assert a == cache.key("a woman walks", "other negative", cfg=False, max_len=1024)
    assert a != cache.key("a woman walks", "blurry", cfg=True, max_len=1024)
    assert a != cache.key("a woman walks", "blurry", cfg=False, max_len=512)
    b, c = cache.key("b", "", False, 1024), cache.key("c", "", False, 1024)
    cache.put(a, ("A",))
    cache.put(b, ("B",))
    assert cache.get(a) == ("A",)  # a is now the most recent
    cache.put(c, ("C",))
    assert cache.get(b) is None and cache.get(a) == ("A",) and cache.get(c) == ("C",)
    assert cache.hits == 3 and len(cache) == 2


def test_generator_reuses_a_prompt_encoding(tiny_runtime):
    """A second take of the same prompt skips the text encoder: the cached hidden states go to the pipeline."""
    from storygraph.engine.generators import GenerationRequest

    gen = tiny_runtime["generator"]
    calls = []
    encode = gen.pipe.encode_prompt

    def counting(*a, **kw):
        if kw.get("prompt") is not None:  # the pipeline's own call passes the embeddings it was given
            calls.append(kw["prompt"])
        return encode(*a, **kw)

    gen.pipe.encode_prompt = counting
    try:
        req = dict(prompt="a woman in a red coat walks by the harbor", width=32, height=32, frames=9, steps=2)
        first = gen.generate(GenerationRequest(seed=1, **req))
        second = gen.generate(GenerationRequest(seed=2, **req))
        other = gen.generate(GenerationRequest(seed=1, **{**req, "prompt": "an old man opens a door"}))
    finally:
        del gen.pipe.encode_prompt
    assert calls == [req["prompt"], "an old man opens a door"]
    assert (first.settings["prompt_cached"], second.settings["prompt_cached"], other.settings["prompt_cached"]) == (
        False, True, False)


def test_encoder_speed_settings_reach_the_engine(tiny_config, tmp_path):
    """``[models] encoder_fp8`` in storygraph.toml converts the towers the engine's observer uses."""
    from storygraph.engine.engine import StoryEngine

    config = tiny_config.with_overrides(models={"encoder_fp8": "row", "encoder_cuda_graphs": True})
    config.save(tmp_path)
    engine = StoryEngine.open(tmp_path)
    try:
        enc = engine.encoders
        assert enc.fp8 == "row"
        assert type(enc.clip_model.vision_model.encoder.layers[0].mlp.fc1).__name__ == "Fp8Linear"
        assert engine.models.load_s["encoders"] > 0
    finally:
        engine.close()
