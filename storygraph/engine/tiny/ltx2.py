"""A tiny LTX-2 pipeline with random weights, built from configs and saved with ``save_pretrained``.

It has every component of ``LTX2ConditionPipeline`` (video transformer, video and audio VAEs, text
connectors, vocoder, scheduler, a Gemma-3 text encoder and a word-level tokenizer), so the real loading
and generation code runs end to end on a CPU in well under a second per scene. The video VAE compresses
8x in time and space like the real one (32x spatially), so "9 frames = one latent chunk + 1" holds here
too. Random weights prove plumbing and speed only; the pictures mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

#: Words the tiny tokenizer knows; any other word becomes <unk>.
DEFAULT_WORDS = (
    "a an the and with in on at of to from into over under near through by is are her his their "
    "man woman girl boy child old young person people she he they walks runs stands sits looks turns "
    "smiles talks holds opens closes enters leaves rain night day morning evening sun light dark city "
    "street harbor sea boat house room door window forest road car red blue green black white gray "
    "coat hat hair face eyes hand camera close up wide shot slow pan tracking warm cold soft hard "
    "lantern fog snow wind quiet loud cinematic"
).split()

SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>")


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


def make_components(seed: int = 0, words: Sequence[str] = DEFAULT_WORDS, vae_patch: int = 1) -> dict:
    """The pipeline's components with random weights (float32, CPU).

    ``vae_patch=4`` compresses 32x in space like the real VAE, so real media sizes (768x512) make the real token
    count and the tiny pipeline can produce real-size frames on a CPU in seconds."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    tokenizer = make_tokenizer(words)
    heads, head_dim = 4, 8
    hidden = heads * head_dim  # the connectors' width must equal the text encoder's hidden size
    text_config = Gemma3Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=128, sliding_window=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(seed)
    text_encoder = Gemma3ForConditionalGeneration(text_config).eval()
    torch.manual_seed(seed)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=hidden, rope_double_precision=False, rope_type="split",
    )
    torch.manual_seed(seed)
    connectors = LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=text_config.text_config.num_hidden_layers + 1,
        video_connector_num_attention_heads=heads, video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=heads, audio_connector_attention_head_dim=head_dim,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_theta=10000.0, rope_double_precision=False,
        causal_temporal_positioning=False, rope_type="split",
    )
    torch.manual_seed(seed)
    levels = 3  # three spatiotemporal down/up steps: 8x in time and space
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=(8,) * levels, decoder_block_out_channels=(8,) * levels,
        layers_per_block=(1,) * (levels + 1), decoder_layers_per_block=(1,) * (levels + 1),
        spatio_temporal_scaling=(True,) * levels, decoder_spatio_temporal_scaling=(True,) * levels,
        decoder_inject_noise=(False,) * (levels + 1), downsample_type=("spatiotemporal",) * levels,
        upsample_residual=(False,) * levels, upsample_factor=(1,) * levels, timestep_conditioning=False,
        patch_size=vae_patch, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    torch.manual_seed(seed)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8,
    )
    torch.manual_seed(seed)
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32,
        out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2], resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )
    return {
        "transformer": transformer, "vae": vae, "audio_vae": audio_vae, "scheduler": scheduler,
        "text_encoder": text_encoder, "tokenizer": tokenizer, "connectors": connectors, "vocoder": vocoder,
        "audio_scheduler": None,
    }


def make_upsampler(seed: int = 0, latent_channels: int = 4):
    """A tiny random 2x spatial latent upsampler (the optional second stage)."""
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    torch.manual_seed(seed)
    return LTX2LatentUpsamplerModel(in_channels=latent_channels, mid_channels=32, num_blocks_per_stage=1)


def make_ltx2(path: Union[str, os.PathLike], seed: int = 0, with_upsampler: bool = True,
              words: Sequence[str] = DEFAULT_WORDS, vae_patch: int = 1) -> Path:
    """Build the tiny pipeline and save it to ``path`` (a diffusers folder with ``model_index.json``).

    With ``with_upsampler`` a tiny latent upsampler is saved under ``path/latent_upsampler``, where the
    real ``Lightricks/LTX-2`` folder keeps its own. Returns ``path``.
    """
    from diffusers import LTX2ConditionPipeline

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe = LTX2ConditionPipeline(**make_components(seed, words, vae_patch))
    pipe.save_pretrained(str(path))
    if with_upsampler:
        make_upsampler(seed).save_pretrained(str(path / "latent_upsampler"))
    return path
