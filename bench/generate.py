"""Seconds per scene of LTX-2 generation, by stage; prints one JSON object.

    python bench/generate.py                       # tiny random pipeline on the CPU
    python bench/generate.py --device cuda --real-size

Default: the tiny random pipeline of ``storygraph.engine.tiny.ltx2``, saved and loaded back through
``LTX2Generator.from_pretrained`` (plumbing and overhead; its pictures mean nothing).

``--real-size``: the published LTX-2 (19B) architecture with random bf16 weights built directly on the
GPU: transformer, text connectors, video VAE, audio VAE and vocoder from the ``Lightricks/LTX-2``
diffusers configs (``transformer/config.json`` etc., copied below). The Gemma 3 text encoder is replaced
by precomputed random prompt embeddings of its output shape (1024 tokens x 49 hidden states x 3840), so
``text_encode_s`` covers the connectors only. Defaults: 768x512, 121 frames, 8 steps (distilled preset,
guidance 1, one stage). A random-weight model of real size runs as fast as the trained one; it says
nothing about quality.

Besides the unconditioned scene it times a continuous-transition scene (9 parent frames at index 0)
with the condition-latent cache off and on, and reports the share of the scene spent VAE-encoding the
condition.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PUBLISHED_H100_S = 9.5  # LTX-2, 768x512, 121 frames, 8 distilled steps, bf16, H100 (Lightricks)

# diffusers configs of Lightricks/LTX-2 (LTX-2.0, 19B)
REAL_CONFIGS = {
    "transformer": {
        "activation_fn": "gelu-approximate", "attention_bias": True, "attention_head_dim": 128,
        "attention_out_bias": True, "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048,
        "audio_hop_length": 160, "audio_in_channels": 128, "audio_num_attention_heads": 32,
        "audio_out_channels": 128, "audio_patch_size": 1, "audio_patch_size_t": 1, "audio_pos_embed_max_pos": 20,
        "audio_sampling_rate": 16000, "audio_scale_factor": 4, "base_height": 2048, "base_width": 2048,
        "caption_channels": 3840, "causal_offset": 1, "cross_attention_dim": 4096,
        "cross_attn_timestep_scale_multiplier": 1000, "in_channels": 128, "norm_elementwise_affine": False,
        "norm_eps": 1e-06, "num_attention_heads": 32, "num_layers": 48, "out_channels": 128, "patch_size": 1,
        "patch_size_t": 1, "pos_embed_max_pos": 20, "qk_norm": "rms_norm_across_heads",
        "rope_double_precision": True, "rope_theta": 10000.0, "rope_type": "split",
        "timestep_scale_multiplier": 1000, "vae_scale_factors": [8, 32, 32],
    },
    "connectors": {
        "audio_connector_attention_head_dim": 128, "audio_connector_num_attention_heads": 30,
        "audio_connector_num_layers": 2, "audio_connector_num_learnable_registers": 128, "caption_channels": 3840,
        "causal_temporal_positioning": False, "connector_rope_base_seq_len": 4096, "rope_double_precision": True,
        "rope_theta": 10000.0, "rope_type": "split", "text_proj_in_factor": 49,
        "video_connector_attention_head_dim": 128, "video_connector_num_attention_heads": 30,
        "video_connector_num_layers": 2, "video_connector_num_learnable_registers": 128,
    },
    "vae": {
        "in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [256, 512, 1024, 2048],
        "down_block_types": ["LTX2VideoDownBlock3D"] * 4, "decoder_block_out_channels": [256, 512, 1024],
        "layers_per_block": [4, 6, 6, 2, 2], "decoder_layers_per_block": [5, 5, 5, 5],
        "spatio_temporal_scaling": [True, True, True, True], "decoder_spatio_temporal_scaling": [True, True, True],
        "decoder_inject_noise": [False, False, False, False],
        "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
        "upsample_residual": [True, True, True], "upsample_factor": [2, 2, 2], "timestep_conditioning": False,
        "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-06, "encoder_causal": True,
        "decoder_causal": False, "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": "reflect",
        "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
    },
    "audio_vae": {
        "attn_resolutions": None, "base_channels": 128, "causality_axis": "height", "ch_mult": [1, 2, 4],
        "double_z": True, "dropout": 0.0, "in_channels": 2, "is_causal": True, "latent_channels": 8,
        "mel_bins": 64, "mel_hop_length": 160, "mid_block_add_attention": False, "norm_type": "pixel",
        "num_res_blocks": 2, "output_channels": 2, "resolution": 256, "sample_rate": 16000,
    },
    "vocoder": {
        "in_channels": 128, "hidden_channels": 1024, "out_channels": 2, "upsample_kernel_sizes": [16, 15, 8, 4, 4],
        "upsample_factors": [6, 5, 2, 2, 2], "resnet_kernel_sizes": [3, 7, 11],
        "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "leaky_relu_negative_slope": 0.1,
        "output_sampling_rate": 24000,
    },
    "latent_upsampler": {
        "dims": 3, "in_channels": 128, "mid_channels": 1024, "num_blocks_per_stage": 4, "spatial_upsample": True,
        "temporal_upsample": False,
    },
    "scheduler": {
        "base_image_seq_len": 1024, "base_shift": 0.95, "invert_sigmas": False, "max_image_seq_len": 4096,
        "max_shift": 2.05, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.1,
        "use_dynamic_shifting": True,
    },
}
TEXT_TOKENS, TEXT_STATES, TEXT_HIDDEN = 1024, 49, 3840  # Gemma 3 12B: 48 layers + embeddings, width 3840


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_real_pipeline(device: str):
    """LTX2ConditionPipeline at the published size, random bf16 weights created on ``device``."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2ConditionPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    classes = {"transformer": LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors,
               "vae": AutoencoderKLLTX2Video, "audio_vae": AutoencoderKLLTX2Audio, "vocoder": LTX2Vocoder}
    parts, params = {}, {}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # create weights as bf16 directly: 19B in fp32 would not fit
    try:
        with torch.device(device), torch.no_grad():
            for name, cls in classes.items():
                torch.manual_seed(0)
                m = cls.from_config(REAL_CONFIGS[name]).eval()
                if any(p.dtype != torch.bfloat16 for p in m.parameters()):
                    m.to(torch.bfloat16)
                parts[name] = m
                params[name] = sum(p.numel() for p in m.parameters())
    finally:
        torch.set_default_dtype(old)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(REAL_CONFIGS["scheduler"])
    pipe = LTX2ConditionPipeline(scheduler=scheduler, text_encoder=None, tokenizer=None, audio_scheduler=None, **parts)
    return pipe, params


def random_prompt_encoder(device: str, prompt_tokens: int = 128):
    """Stand-in for Gemma 3: random hidden states of its output shape, left-padded like its tokenizer."""
    import torch

    g = torch.Generator(device).manual_seed(0)
    embeds = torch.randn(1, TEXT_TOKENS, TEXT_STATES * TEXT_HIDDEN, generator=g, device=device, dtype=torch.bfloat16)
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device=device)
    mask[:, -prompt_tokens:] = 1

    def encode(request, cfg, _device):
        neg = (embeds.clone(), mask.clone()) if cfg else (None, None)
        return embeds, mask, neg[0], neg[1]

    return encode


def _scene(gen, req, runs):
    results = [gen.generate(req) for _ in range(runs)]
    keys = sorted({k for r in results for k in r.timings})
    out = {k: statistics.median(r.timings.get(k, 0.0) for r in results) for k in keys}
    out["peak_gib"] = max(r.peak_gib or 0.0 for r in results)
    out["attempts"] = [a for r in results for a in r.attempts]
    out["cache_hits"] = sum(r.settings.get("condition_cache_hits", 0) for r in results)
    return out, results[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--real-size", action="store_true", help="the published 19B architecture (needs a big GPU)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=2, help="timed runs per case (median reported)")
    ap.add_argument("--vae-tiling", action="store_true")
    ap.add_argument("--no-conditioned", action="store_true", help="skip the conditioned-scene cases")
    ap.add_argument("--two-stage", action="store_true",
                    help="also time the two-stage path: half size, 2x latent upsampler, 3 refining steps")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from storygraph.engine.generators import ConditionInput, GenerationRequest, LTX2Generator

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1
    t0 = time.perf_counter()
    if args.real_size:
        if args.device != "cuda":
            log("warning: --real-size on the CPU needs ~45 GB of RAM and hours")
        pipe, params = build_real_pipeline(args.device)
        gen = LTX2Generator(pipe, device=args.device, dtype=torch.bfloat16, vae_tiling=args.vae_tiling,
                            prompt_encoder=random_prompt_encoder(args.device), source="random:Lightricks/LTX-2")
        w, h, f = args.width or 768, args.height or 512, args.frames or 121
        model = "LTX-2 19B architecture, random bf16 weights (text encoder replaced by random embeddings)"
    else:
        from storygraph.engine.tiny.ltx2 import make_ltx2

        folder = make_ltx2(Path(tempfile.mkdtemp(prefix="tiny-ltx2-")))
        gen = LTX2Generator.from_pretrained(folder, device=args.device, vae_tiling=args.vae_tiling)
        params = {n: sum(p.numel() for p in getattr(gen.pipe, n).parameters())
                  for n in ("transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder")}
        w, h, f = args.width or 128, args.height or 128, args.frames or 33
        model = "tiny random LTX-2 (storygraph.engine.tiny.ltx2)"
    build_s = time.perf_counter() - t0
    log(f"built {model} in {build_s:.1f}s: {sum(params.values()) / 1e9:.2f}B parameters")

    req = GenerationRequest(prompt="a woman in a red coat walks along the harbor at night", width=w, height=h,
                            frames=f, steps=args.steps, guidance=1.0, seed=0)
    t = time.perf_counter()
    gen.generate(req)  # warm-up: kernels, allocator, cuDNN/cuBLAS autotuning
    warmup_s = time.perf_counter() - t
    log(f"warm-up scene {warmup_s:.1f}s")
    plain, last = _scene(gen, req, args.runs)
    log(f"scene {plain['total_s']:.2f}s (denoise {plain['denoise_s']:.2f}s, vae decode {plain['vae_decode_s']:.2f}s): "
        + json.dumps({k: v for k, v in plain.items() if k != "attempts"}))

    out = {
        "seconds_per_scene": round(plain["total_s"], 4),
        "denoise_s": round(plain["denoise_s"], 4),
        "vae_encode_s": round(plain["vae_encode_s"], 4),
        "vae_decode_s": round(plain["vae_decode_s"], 4),
        "audio_decode_s": round(plain.get("audio_decode_s", 0.0), 4),
        "text_encode_s": round(plain["text_encode_s"], 4),
        "postprocess_s": round(plain.get("postprocess_s", 0.0), 4),
        "other_s": round(plain.get("other_s", 0.0), 4),
        "peak_gib": round(plain["peak_gib"], 3),
        "width": last.width, "height": last.height, "frames": last.num_frames, "steps": args.steps,
        "runs": args.runs, "warmup_s": round(warmup_s, 3), "build_s": round(build_s, 3),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "model": model, "parameters": sum(params.values()), "parameters_by_component": params,
        "vae_tiling": gen.vae_tiling, "attempts": plain["attempts"],
        "torch": torch.__version__,
    }
    if args.real_size and args.device == "cuda":
        out["published_h100_s"] = PUBLISHED_H100_S
        out["ratio_to_published"] = round(plain["total_s"] / PUBLISHED_H100_S, 3)

    if not args.no_conditioned:
        # a continuous transition: the parent's last 9 frames at index 0
        rs = np.random.RandomState(0)
        parent = [(rs.rand(h, w, 3) * 255).astype(np.uint8) for _ in range(9)]
        creq = GenerationRequest(**{**req.__dict__, "conditions": [ConditionInput(parent, index=0, strength=1.0)]})
        gen.cache_condition_latents = False
        cold, _ = _scene(gen, creq, args.runs)
        gen.cache_condition_latents = True
        gen.generate(creq)  # fills the cache
        warm, _ = _scene(gen, creq, args.runs)
        share = cold["vae_encode_s"] / cold["total_s"] if cold["total_s"] else 0.0
        out["conditioned"] = {
            "condition": "9 frames at index 0 (continuous transition)",
            "seconds_per_scene_uncached": round(cold["total_s"], 4),
            "vae_encode_s_uncached": round(cold["vae_encode_s"], 4),
            "vae_encode_share": round(share, 5),
            "seconds_per_scene_cached": round(warm["total_s"], 4),
            "vae_encode_s_cached": round(warm["vae_encode_s"], 4),
            "cache_hits": warm["cache_hits"],
            "saving_s": round(cold["total_s"] - warm["total_s"], 4),
            "peak_gib": round(max(cold["peak_gib"], warm["peak_gib"]), 3),
        }
        log(f"conditioned: encode {cold['vae_encode_s']:.3f}s = {100 * share:.2f}% of the scene")
    if args.two_stage:
        print(json.dumps(out), file=sys.stderr, flush=True)  # the one-stage figures survive a failure below
        gen.upsampler = build_upsampler(args.device) if args.real_size else _tiny_upsampler(args.device)
        gen.generate(req)  # warm-up at the stage-1 size
        two, last2 = _scene(gen, req, args.runs)
        out["two_stage"] = {
            "stage1": f"{last2.width // 2}x{last2.height // 2}, {args.steps} steps", "stage2": "2x upsample, 3 steps",
            "seconds_per_scene": round(two["total_s"], 4), "denoise_s": round(two["denoise_s"], 4),
            "upsample_s": round(two.get("upsample_s", 0.0), 4), "vae_decode_s": round(two["vae_decode_s"], 4),
            "peak_gib": round(two["peak_gib"], 3), "width": last2.width, "height": last2.height,
        }
        log(f"two-stage scene {two['total_s']:.2f}s")
    print(json.dumps(out))
    return 0


def build_upsampler(device: str):
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    torch.manual_seed(0)  # small (0.5B): built on the CPU, where its integer blur kernel can be made
    return LTX2LatentUpsamplerModel.from_config(REAL_CONFIGS["latent_upsampler"]).eval().to(device, torch.bfloat16)


def _tiny_upsampler(device: str):
    from storygraph.engine.tiny.ltx2 import make_upsampler

    return make_upsampler().to(device).eval()


if __name__ == "__main__":
    raise SystemExit(main())
