"""Real-size LTX-2.0, 2.3 and 2.5 component configs in diffusers form, and LTX-2.0's Gemma 3 12B text encoder in
transformers form, for benchmarks with random weights.

Source: huggingface/diffusers ``scripts/convert_ltx2_to_diffusers.py`` at 58eb52c0 (``get_ltx2_transformer_config``,
``get_ltx2_connectors_config``, ``get_ltx2_video_vae_config``, ``get_ltx2_audio_vae_config``,
``get_ltx2_vocoder_config``, ``get_ltx2_spatial_latent_upsampler_config``, ``--version 2.0 | 2.3 | 2.5``), the code
that writes the published ``Lightricks/LTX-2``, ``diffusers/LTX-2.3-Diffusers`` and ``Lightricks/LTX-2.5-Diffusers``
folders (whose own config files could not be read here: the hub is out of reach).

What is NOT verified:

* LTX-2.5's text encoder. The converter derives the connectors' ``caption_channels`` and ``text_proj_in_factor``
  from the Gemma 4 text config it is given; that config (a fine-tuned Gemma 4 12B) is only known from third-party
  copies: hidden 3840, 48 layers (so 3840 and 49, as for Gemma 3 12B). The benchmarks replace the text encoder by
  random embeddings of that shape anyway, so only the connectors' input width depends on it.
* LTX-2.5's duration head: its sizes come from the weights at conversion and are published nowhere. The
  benchmarks give ``num_frames``, so the head is not built.
* LTX-2.5's latent upsampler (the converter covers 2.0 and 2.3).
"""

from __future__ import annotations

import copy

VERSIONS = ("2.0", "2.3", "2.5")

_TRANSFORMER_20 = {
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
    "attention_head_dim": 128, "cross_attention_dim": 4096, "vae_scale_factors": [8, 32, 32], "pos_embed_max_pos": 20,
    "base_height": 2048, "base_width": 2048, "gated_attn": False, "cross_attn_mod": False, "audio_in_channels": 128,
    "audio_out_channels": 128, "audio_patch_size": 1, "audio_patch_size_t": 1, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "audio_scale_factor": 4,
    "audio_pos_embed_max_pos": 20, "audio_sampling_rate": 16000, "audio_hop_length": 160, "audio_gated_attn": False,
    "audio_cross_attn_mod": False, "num_layers": 48, "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False, "norm_eps": 1e-06, "caption_channels": 3840,
    "attention_bias": True, "attention_out_bias": True, "rope_theta": 10000.0, "rope_double_precision": True,
    "causal_offset": 1, "timestep_scale_multiplier": 1000, "cross_attn_timestep_scale_multiplier": 1000,
    "rope_type": "split", "use_prompt_embeddings": True, "perturbed_attn": False,
}
_CONNECTORS_20 = {
    "caption_channels": 3840, "text_proj_in_factor": 49, "video_connector_num_attention_heads": 30,
    "video_connector_attention_head_dim": 128, "video_connector_num_layers": 2,
    "video_connector_num_learnable_registers": 128, "video_gated_attn": False,
    "audio_connector_num_attention_heads": 30, "audio_connector_attention_head_dim": 128,
    "audio_connector_num_layers": 2, "audio_connector_num_learnable_registers": 128, "audio_gated_attn": False,
    "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0, "rope_double_precision": True,
    "causal_temporal_positioning": False, "rope_type": "split", "per_modality_projections": False, "proj_bias": False,
}
_VAE_20 = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [256, 512, 1024, 2048],
    "down_block_types": ["LTX2VideoDownBlock3D"] * 4, "decoder_block_out_channels": [256, 512, 1024],
    "layers_per_block": [4, 6, 6, 2, 2], "decoder_layers_per_block": [5, 5, 5, 5],
    "spatio_temporal_scaling": [True, True, True, True], "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [False, False, False, False],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "spatiotemporal"], "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2], "timestep_conditioning": False, "patch_size": 4, "patch_size_t": 1,
    "resnet_norm_eps": 1e-06, "encoder_causal": True, "decoder_causal": False, "encoder_spatial_padding_mode": "zeros",
    "decoder_spatial_padding_mode": "reflect", "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
}
_AUDIO_VAE = {
    "base_channels": 128, "output_channels": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": None,
    "in_channels": 2, "resolution": 256, "latent_channels": 8, "norm_type": "pixel", "causality_axis": "height",
    "dropout": 0.0, "mid_block_add_attention": False, "sample_rate": 16000, "mel_hop_length": 160, "is_causal": True,
    "mel_bins": 64, "double_z": True,
}
_VOCODER_20 = {
    "in_channels": 128, "hidden_channels": 1024, "out_channels": 2, "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "upsample_factors": [6, 5, 2, 2, 2], "resnet_kernel_sizes": [3, 7, 11],
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "act_fn": "leaky_relu", "leaky_relu_negative_slope": 0.1,
    "antialias": False, "final_act_fn": "tanh", "final_bias": True, "output_sampling_rate": 24000,
}
_VOCODER_23 = {
    "in_channels": 128, "hidden_channels": 1536, "out_channels": 2, "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
    "upsample_factors": [5, 2, 2, 2, 2, 2], "resnet_kernel_sizes": [3, 7, 11],
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "act_fn": "snakebeta", "leaky_relu_negative_slope": 0.1,
    "antialias": True, "antialias_ratio": 2, "antialias_kernel_size": 12, "final_act_fn": None, "final_bias": False,
    "bwe_in_channels": 128, "bwe_hidden_channels": 512, "bwe_out_channels": 2,
    "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4], "bwe_upsample_factors": [6, 5, 2, 2, 2],
    "bwe_resnet_kernel_sizes": [3, 7, 11], "bwe_resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "bwe_act_fn": "snakebeta", "bwe_leaky_relu_negative_slope": 0.1, "bwe_antialias": True, "bwe_antialias_ratio": 2,
    "bwe_antialias_kernel_size": 12, "bwe_final_act_fn": None, "bwe_final_bias": False, "filter_length": 512,
    "hop_length": 80, "window_length": 512, "num_mel_channels": 64, "input_sampling_rate": 16000,
    "output_sampling_rate": 48000,
}
_UPSAMPLER_20 = {"dims": 3, "in_channels": 128, "mid_channels": 1024, "num_blocks_per_stage": 4,
                 "spatial_upsample": True, "temporal_upsample": False}
#: Dev checkpoints shift the schedule by resolution; the distilled presets pass their sigmas with the shift off.
_SCHEDULER = {"base_image_seq_len": 1024, "base_shift": 0.95, "invert_sigmas": False, "max_image_seq_len": 4096,
              "max_shift": 2.05, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.1,
              "use_dynamic_shifting": True}


def _v23() -> dict:
    transformer = dict(_TRANSFORMER_20, gated_attn=True, cross_attn_mod=True, audio_gated_attn=True,
                       audio_cross_attn_mod=True, use_prompt_embeddings=False, perturbed_attn=True)
    connectors = dict(_CONNECTORS_20, video_connector_num_attention_heads=32, video_connector_num_layers=8,
                      video_gated_attn=True, audio_connector_num_attention_heads=32,
                      audio_connector_attention_head_dim=64, audio_connector_num_layers=8, audio_gated_attn=True,
                      per_modality_projections=True, video_hidden_dim=4096, audio_hidden_dim=2048, proj_bias=True)
    vae = dict(_VAE_20, block_out_channels=[256, 512, 1024, 1024], decoder_block_out_channels=[256, 512, 512, 1024],
               layers_per_block=[4, 6, 4, 2, 2], decoder_layers_per_block=[4, 6, 4, 2, 2],
               decoder_spatio_temporal_scaling=[True, True, True, True],
               decoder_inject_noise=[False, False, False, False, False],
               upsample_type=["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
               upsample_residual=[False, False, False, False], upsample_factor=[2, 2, 1, 2],
               decoder_spatial_padding_mode="zeros")
    return {"transformer": transformer, "connectors": connectors, "vae": vae, "audio_vae": dict(_AUDIO_VAE),
            "vocoder": dict(_VOCODER_23), "latent_upsampler": dict(_UPSAMPLER_20), "scheduler": dict(_SCHEDULER)}


def configs(version: str) -> dict:
    """The component configs of ``version`` (copies: change them freely)."""
    if version == "2.0":
        out = {"transformer": _TRANSFORMER_20, "connectors": _CONNECTORS_20, "vae": _VAE_20, "audio_vae": _AUDIO_VAE,
               "vocoder": _VOCODER_20, "latent_upsampler": _UPSAMPLER_20, "scheduler": _SCHEDULER}
    elif version == "2.3":
        out = _v23()
    elif version == "2.5":
        out = _v23()
        # the transformer-level deltas from 2.3 (the converter: video FFN without bias, keyframe position embedding)
        out["transformer"].update(ff_bias=False, use_keyframes_abs_pos_embedding=True)
        # UNVERIFIED: derived from a third-party Gemma 4 12B config (hidden 3840, 48 layers); see the docstring
        out["connectors"].update(caption_channels=3840, text_proj_in_factor=49)
        out.pop("latent_upsampler")  # not in the converter for 2.5
    else:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    return copy.deepcopy(out)


#: The text encoder's output the connectors take: (tokens, hidden states = layers + 1, width). 2.5: unverified.
TEXT_SHAPE = {"2.0": (1024, 49, 3840), "2.3": (1024, 49, 3840), "2.5": (1024, 49, 3840)}
#: Parameters of the published transformers, for a sanity check of a build.
PUBLISHED_PARAMS = {"2.0": "19B", "2.3": "22B", "2.5": "22B"}

#: Gemma 3 12B (google/gemma-3-12b-it), the text encoder of Lightricks/LTX-2
GEMMA3_12B = {
    "text_config": dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=256, sliding_window=1024,
                        max_position_embeddings=131072, query_pre_attn_scalar=256, rms_norm_eps=1e-6,
                        hidden_activation="gelu_pytorch_tanh"),
    "vision_config": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                          image_size=896, patch_size=14, vision_use_head=False),
    "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
    "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}
