"""Tiny LTX-2.0 / 2.3 / 2.5 pipelines and a tiny IC-LoRA with random weights, built from configs and saved.

Each has every component of ``LTX2ConditionPipeline`` for its version (video transformer, video and audio
VAEs, text connectors, vocoder, scheduler, a Gemma text encoder and a word-level tokenizer; a duration head
for 2.5), so the real loading and generation code runs end to end on a CPU in well under a second per scene:

* 2.0: Gemma 3 text encoder; transformer without cross-attention modulation, projecting the caption itself;
  one shared connector projection; ``LTX2Vocoder``;
* 2.3: Gemma 3; transformer ``cross_attn_mod``, gated attention, ``perturbed_attn``; per-modality connector
  projections; ``LTX2VocoderWithBWE`` (16 -> 48 kHz);
* 2.5: as 2.3 plus ``ff_bias=False`` and ``use_keyframes_abs_pos_embedding``, a Gemma 4 text encoder
  (``Gemma4UnifiedForConditionalGeneration``, ``model_type`` ``gemma4_unified``) and an ``LTX2DurationHead``.

The video VAE compresses 8x in time and 32x in space like the real one (``patch_size`` 4 and three 2x
spatio-temporal steps), so the transformer's coordinates (it assumes (8, 32, 32)) are real pixel coordinates
and "9 frames = one latent chunk + 1" holds. Random weights prove plumbing and speed only; the pictures mean
nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

from . import mark_random

VERSIONS = ("2.0", "2.3", "2.5")

#: Words the tiny tokenizer knows; any other word becomes <unk>.
DEFAULT_WORDS = (
    "a an the and with in on at of to from into over under near through by is are her his their "
    "man woman girl boy child old young person people she he they walks runs stands sits looks turns "
    "smiles talks holds opens closes enters leaves rain night day morning evening sun light dark city "
    "street harbor sea boat house room door window forest road car red blue green black white gray "
    "coat hat hair face eyes hand camera close up wide shot slow pan tracking warm cold soft hard "
    "lantern fog snow wind quiet loud cinematic reference sheet description top middle bottom row left right "
    "setting character"
).split()

SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>")

TEXT_HIDDEN = 32  # the text encoder's width (the connectors' caption channels)
TEXT_LAYERS = 2  # connectors take every hidden state: embeddings + each layer
VIDEO_HEADS, VIDEO_HEAD_DIM = 2, 8  # transformer video width 16
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 4  # transformer audio width 8
LATENT_CHANNELS = 4

#: The modules Lightricks' IC-LoRA trainer adapts (ltx-trainer ``v2v_ic_lora.yaml``): video attention and FFN.
IC_LORA_TARGETS = ("attn1.to_k", "attn1.to_q", "attn1.to_v", "attn1.to_out.0", "attn2.to_k", "attn2.to_q",
                   "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def _check(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"LTX-2 version must be one of {', '.join(VERSIONS)}, got {version!r}")


def make_tokenizer(words: Sequence[str] = DEFAULT_WORDS, max_length: int = 64):
    """A word-level fast tokenizer (left padding, like Gemma's) built in-process with ``tokenizers``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(list(SPECIAL) + [w for w in dict.fromkeys(words) if w not in SPECIAL])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left", model_max_length=max_length,
    )


def _text_config(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN,
                num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                max_position_embeddings=128, sliding_window=16)


def make_gemma3(vocab_size: int):
    """A tiny ``Gemma3ForConditionalGeneration`` (the LTX-2.0 / 2.3 text encoder)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    cfg = Gemma3Config(
        text_config=_text_config(vocab_size),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return Gemma3ForConditionalGeneration(cfg).eval()


def make_gemma4(vocab_size: int):
    """A tiny ``Gemma4UnifiedForConditionalGeneration`` (``model_type`` ``gemma4_unified``: the LTX-2.5 encoder).

    diffusers' converter accepts only this type for 2.5, and picks image CRF 18 by it.
    """
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    cfg = Gemma4UnifiedConfig(
        text_config=dict(_text_config(vocab_size), layer_types=["sliding_attention", "full_attention"],
                         pad_token_id=0, eos_token_id=1, bos_token_id=2),
        vision_config=dict(patch_size=4, pooling_kernel_size=1, mm_embed_dim=TEXT_HIDDEN, mm_posemb_size=16,
                           output_proj_dims=TEXT_HIDDEN),
        audio_config=dict(audio_embed_dim=8),
        # the multimodal special-token ids must fall inside the tiny vocabulary
        boi_token_id=3, eoi_token_id=3, image_token_id=3, video_token_id=3, boa_token_id=3, eoa_token_index=3,
        audio_token_id=3,
    )
    return Gemma4UnifiedForConditionalGeneration(cfg).eval()


def make_transformer(version: str = "2.0"):
    from diffusers import LTX2VideoTransformer3DModel

    _check(version)
    newer = version != "2.0"
    kw = dict(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
        num_attention_heads=VIDEO_HEADS, attention_head_dim=VIDEO_HEAD_DIM,
        cross_attention_dim=VIDEO_HEADS * VIDEO_HEAD_DIM, audio_in_channels=LATENT_CHANNELS,
        audio_out_channels=LATENT_CHANNELS, audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM, audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=TEXT_HIDDEN, vae_scale_factors=(8, 32, 32),
        rope_type="split", rope_double_precision=False,
        # the version switches of diffusers' converter (get_ltx2_transformer_config)
        gated_attn=newer, audio_gated_attn=newer, cross_attn_mod=newer, audio_cross_attn_mod=newer,
        use_prompt_embeddings=not newer, perturbed_attn=newer,
    )
    if version == "2.5":
        kw.update(ff_bias=False, use_keyframes_abs_pos_embedding=True)
    return LTX2VideoTransformer3DModel(**kw)


def make_connectors(version: str = "2.0"):
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    common = dict(caption_channels=TEXT_HIDDEN, text_proj_in_factor=TEXT_LAYERS + 1, video_connector_num_layers=1,
                  audio_connector_num_layers=1, video_connector_num_learnable_registers=None,
                  audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32,
                  rope_double_precision=False, rope_type="split")
    if version == "2.0":  # one shared projection; the connectors are as wide as the caption
        return LTX2TextConnectors(**common, video_connector_num_attention_heads=4,
                                  video_connector_attention_head_dim=TEXT_HIDDEN // 4,
                                  audio_connector_num_attention_heads=4,
                                  audio_connector_attention_head_dim=TEXT_HIDDEN // 4)
    # 2.3 / 2.5: per-modality projections straight to the transformer's video and audio widths
    return LTX2TextConnectors(**common, video_connector_num_attention_heads=VIDEO_HEADS,
                              video_connector_attention_head_dim=VIDEO_HEAD_DIM,
                              audio_connector_num_attention_heads=AUDIO_HEADS,
                              audio_connector_attention_head_dim=AUDIO_HEAD_DIM, video_gated_attn=True,
                              audio_gated_attn=True, per_modality_projections=True,
                              video_hidden_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
                              audio_hidden_dim=AUDIO_HEADS * AUDIO_HEAD_DIM, proj_bias=True)


def make_video_vae():
    """8x in time, 32x in space, like the real video VAE: ``patch_size`` 4 and three 2x spatio-temporal steps."""
    from diffusers import AutoencoderKLLTX2Video

    n = 3
    return AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
        block_out_channels=(8,) * n, decoder_block_out_channels=(8,) * n,
        layers_per_block=(1,) * (n + 1), decoder_layers_per_block=(1,) * (n + 1),
        spatio_temporal_scaling=(True,) * n, decoder_spatio_temporal_scaling=(True,) * n,
        decoder_inject_noise=(False,) * (n + 1), downsample_type=("spatiotemporal",) * n,
        upsample_residual=(False,) * n, upsample_factor=(1,) * n, timestep_conditioning=False,
        patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
        decoder_spatial_padding_mode="zeros",  # reflect padding needs more than one latent pixel
    )


def make_audio_vae():
    from diffusers import AutoencoderKLLTX2Audio

    return AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8,
    )


def make_vocoder(version: str, mel_in: int):
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

    if version == "2.0":
        return LTX2Vocoder(in_channels=mel_in, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                           upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                           leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    # with bandwidth extension: the second stage re-analyses the waveform into mels every hop_length samples and
    # upsamples them by hop_length * (48000 / 16000) = 4 * 3 = 12 here (real: 80 * 3 = 240)
    return LTX2VocoderWithBWE(
        in_channels=mel_in, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
        resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], bwe_in_channels=2 * 8, bwe_hidden_channels=16,
        bwe_out_channels=2, bwe_upsample_kernel_sizes=[7, 8], bwe_upsample_factors=[3, 4],
        bwe_resnet_kernel_sizes=[3], bwe_resnet_dilations=[[1, 3, 5]], filter_length=16, hop_length=4,
        window_length=16, num_mel_channels=8, input_sampling_rate=16000, output_sampling_rate=48000,
    )


def make_duration_head():
    """A tiny ``LTX2DurationHead`` (LTX-2.5 predicts the clip's length when ``num_frames`` is not given)."""
    from diffusers.pipelines.ltx2 import LTX2DurationHead

    return LTX2DurationHead(video_cross_attention_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
                            audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM, pooler_hidden_dim=16,
                            num_queries=1, num_pooler_heads=2, mlp_hidden_dim=16)


def make_scheduler(distilled: bool = False):
    """Dev checkpoints shift their sigmas by resolution; distilled ones use them as given (as the converter)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if distilled:
        return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, base_shift=0.95, max_shift=2.05,
                                               base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=None)
    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                           base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)


def make_components(seed: int = 0, words: Sequence[str] = DEFAULT_WORDS, version: str = "2.0",
                    distilled: bool = False) -> dict:
    """The components of a tiny ``LTX2ConditionPipeline`` of ``version`` with random weights (float32, CPU)."""
    import torch

    _check(version)
    tokenizer = make_tokenizer(words)
    parts = {}
    for name, build in (("text_encoder", lambda: (make_gemma4 if version == "2.5" else make_gemma3)(len(tokenizer))),
                        ("transformer", lambda: make_transformer(version)),
                        ("connectors", lambda: make_connectors(version)),
                        ("vae", make_video_vae), ("audio_vae", make_audio_vae)):
        torch.manual_seed(seed)
        parts[name] = build()
    torch.manual_seed(seed)
    a = parts["audio_vae"].config
    parts["vocoder"] = make_vocoder(version, a.output_channels * a.mel_bins)
    if version == "2.5":
        torch.manual_seed(seed)
        parts["duration_head"] = make_duration_head()
    return {**parts, "tokenizer": tokenizer, "scheduler": make_scheduler(distilled), "audio_scheduler": None}


def make_upsampler(seed: int = 0, latent_channels: int = LATENT_CHANNELS):
    """A tiny random 2x spatial latent upsampler (the optional second stage)."""
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    torch.manual_seed(seed)
    return LTX2LatentUpsamplerModel(in_channels=latent_channels, mid_channels=32, num_blocks_per_stage=1)


def make_ltx2(path: Union[str, os.PathLike], seed: int = 0, with_upsampler: bool = True,
              words: Sequence[str] = DEFAULT_WORDS, version: str = "2.0", distilled: bool = False) -> Path:
    """Build the tiny pipeline of ``version`` and save it to ``path`` (a diffusers folder with ``model_index.json``).

    With ``with_upsampler`` a tiny latent upsampler is saved under ``path/latent_upsampler``, where the real
    Lightricks folders keep theirs. Returns ``path``.
    """
    from diffusers import LTX2ConditionPipeline

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe = LTX2ConditionPipeline(**make_components(seed, words, version, distilled))
    pipe.save_pretrained(str(path))
    mark_random(path)
    if with_upsampler:
        make_upsampler(seed).save_pretrained(str(path / "latent_upsampler"))
    return path


def make_ic_lora(model: Union[str, os.PathLike, object], out_dir: Union[str, os.PathLike], rank: int = 4,
                 reference_downscale_factor: int = 1, seed: int = 0) -> Path:
    """A random IC-LoRA for a transformer, saved as diffusers writes LoRAs; returns the .safetensors path.

    ``model``: a pipeline folder (its ``transformer/``) or a transformer of any size (only its layers' shapes are
    read; nothing is copied). The LoRA adapts the video attention and FFN (Lightricks' IC-LoRA targets) with
    random A and B, so loading it changes the transformer's output. Its header carries
    ``reference_downscale_factor`` where Lightricks' IC-LoRAs keep it.
    """
    import torch
    from diffusers import LTX2InContextPipeline, LTX2VideoTransformer3DModel
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    if isinstance(model, (str, os.PathLike)):
        model = LTX2VideoTransformer3DModel.from_pretrained(str(model), subfolder="transformer")
    g = torch.Generator("cpu").manual_seed(seed)
    weights = {}
    for name, module in model.named_modules():
        # "audio_attn1.to_q" ends like "attn1.to_q": the IC-LoRA adapts the video stream only
        if isinstance(module, torch.nn.Linear) and name.endswith(IC_LORA_TARGETS) and "audio" not in name:
            n_in, n_out = module.in_features, module.out_features
            dtype = torch.bfloat16 if module.weight.dtype == torch.bfloat16 else torch.float32
            weights[f"{name}.lora_A.weight"] = (torch.randn(rank, n_in, generator=g) / n_in ** 0.5).to(dtype)
            weights[f"{name}.lora_B.weight"] = (torch.randn(n_out, rank, generator=g) / rank ** 0.5).to(dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"r": rank, "lora_alpha": rank, "target_modules": sorted(IC_LORA_TARGETS)}
    LTX2InContextPipeline.save_lora_weights(out, transformer_lora_layers=weights,
                                            transformer_lora_adapter_metadata=meta)
    path = out / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata() or {})
    header["reference_downscale_factor"] = str(int(reference_downscale_factor))
    save_file(load_file(str(path)), str(path), metadata=header)
    mark_random(out)
    return path
