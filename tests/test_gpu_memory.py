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
    from storygraph.engine.generators.gpu_memory import text_decoder

    gen = tiny_runtime["generator"]
    calls = []
    handle = text_decoder(gen.pipe.text_encoder).register_forward_hook(lambda m, a, out: calls.append(1))
    try:
        req = dict(prompt="a woman in a red coat walks by the harbor", width=32, height=32, frames=9, steps=2)
        first = gen.generate(GenerationRequest(seed=1, **req))
        second = gen.generate(GenerationRequest(seed=2, **req))
        other = gen.generate(GenerationRequest(seed=1, **{**req, "prompt": "an old man opens a door"}))
    finally:
        handle.remove()
    assert len(calls) == 2  # guidance 1: one pass per new prompt, none for the repeated one
    assert (first.settings["prompt_cached"], second.settings["prompt_cached"], other.settings["prompt_cached"]) == (
        False, True, False)


def test_prompt_encoding_is_the_pipelines_without_autograd(tiny_runtime):
    """The generator's prompt encoding equals ``encode_prompt``'s, holds no autograd graph (the pipeline's own
    call keeps every Gemma layer's activations alive with the cached encoding) and runs only the decoder: no
    KV cache, no LM head."""
    import torch

    from storygraph.engine.generators.gpu_memory import text_decoder

    gen = tiny_runtime["generator"]
    te = gen.pipe.text_encoder
    decoder = text_decoder(te)
    assert decoder is te.model.language_model  # Gemma3ForConditionalGeneration: the layers' owner
    seen = []

    def spy(module, args, kwargs):
        seen.append({"use_cache": kwargs.get("use_cache"), "hidden": kwargs.get("output_hidden_states")})

    lm_head_calls = []
    h1 = decoder.register_forward_pre_hook(spy, with_kwargs=True)
    h2 = te.lm_head.register_forward_hook(lambda m, a, out: lm_head_calls.append(1))
    try:
        for text in ("a woman walks along the harbor at night", ""):
            mine, mask = gen._encode_text(text, 64)
            with torch.no_grad():
                ref, ref_mask, _, _ = gen.pipe.encode_prompt(prompt=text, do_classifier_free_guidance=False,
                                                             max_sequence_length=64, device=gen.device)
            assert not mine.requires_grad and mine.grad_fn is None
            assert mine.shape == ref.shape and mine.dtype == ref.dtype
            torch.testing.assert_close(mine, ref, rtol=0, atol=0)
            assert torch.equal(mask, ref_mask)
    finally:
        h1.remove()
        h2.remove()
    assert seen[0::2] == [{"use_cache": False, "hidden": True}] * 2  # the generator's calls (then the pipeline's)
    assert lm_head_calls == [1, 1]  # the two reference calls above, none from the generator


def test_a_gemma_4_encoder_runs_whole_and_encodes_as_the_pipeline(tmp_path):
    """LTX-2.5's Gemma 4 computes inputs for its layers outside them, so its decoder alone gives other hidden
    states: the generator runs the whole encoder (without autograd) and gets the pipeline's encoding exactly."""
    import torch

    from storygraph.engine.generators import LTX2Generator
    from storygraph.engine.generators.gpu_memory import text_decoder
    from storygraph.engine.tiny.ltx2 import make_ltx2

    gen = LTX2Generator.from_pretrained(make_ltx2(tmp_path / "ltx-2.5", with_upsampler=False, version="2.5"),
                                        device="cpu")
    te = gen.pipe.text_encoder
    assert te.config.model_type == "gemma4_unified" and text_decoder(te) is None
    layers = next(m for m in te.modules() if isinstance(getattr(m, "layers", None), torch.nn.ModuleList))
    with torch.no_grad():  # what the decoder alone would give: not the encoding (why it is not used)
        ids = gen.pipe.tokenizer(["a pier at night"], padding="max_length", max_length=32, return_tensors="pt")
        alone = layers(input_ids=ids.input_ids, attention_mask=ids.attention_mask, use_cache=False,
                       output_hidden_states=True).hidden_states
        ref, ref_mask, _, _ = gen.pipe.encode_prompt(prompt="a pier at night", do_classifier_free_guidance=False,
                                                     max_sequence_length=32, device=gen.device)
    assert not torch.equal(torch.stack(alone, dim=-1).flatten(2, 3).to(ref.dtype), ref)
    mine, mask = gen._encode_text("a pier at night", 32)
    assert mine.grad_fn is None
    torch.testing.assert_close(mine, ref, rtol=0, atol=0)
    assert torch.equal(mask, ref_mask)


def test_streaming_the_text_encoder_groups_its_decoder_layers(tiny_runtime, monkeypatch):
    """Block-level group offloading of Gemma 3 goes on the module that owns the layers
    (``model.language_model``): on the top model the layers are not its children, and its one group would be
    the whole model. The diffusers transformer uses its own ``enable_group_offload``."""
    import diffusers.hooks

    from storygraph.engine.generators.gpu_memory import stream_module

    gen = tiny_runtime["generator"]
    te, tr = gen.pipe.text_encoder, gen.pipe.transformer
    applied, enabled = [], []
    monkeypatch.setattr(diffusers.hooks, "apply_group_offloading", lambda module, **kw: applied.append((module, kw)))
    monkeypatch.setattr(type(tr), "enable_group_offload", lambda self, **kw: enabled.append((self, kw)),
                        raising=False)
    try:
        stream_module(te, "cpu")
        stream_module(te, "cpu")  # once only
        stream_module(tr, "cpu")
    finally:
        for m in (te, tr):
            m.__dict__.pop("_storygraph_streamed", None)
    assert [m for m, _ in applied] == [te.model.language_model]
    assert applied[0][1]["offload_type"] == "block_level" and applied[0][1]["num_blocks_per_group"] == 1
    assert [m for m, _ in enabled] == [tr]


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
