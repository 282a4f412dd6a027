"""Seconds per scene of LTX-2 generation, by stage, per checkpoint version and memory mode; prints one JSON object.

    python bench/generate.py --tiny [--version 2.3] [--mode context]            # tiny random pipeline, CPU
    python bench/generate.py --device cuda --real-size --version 2.3 --mode extend,context,reference,keyframe

``--tiny`` (the default): the tiny random pipeline of ``storygraph.engine.tiny.ltx2`` for ``--version``, saved and
loaded back through ``LTX2Generator.from_pretrained`` (plumbing and overhead; its pictures mean nothing).

``--real-size``: the published architecture of ``--version`` (2.0: 19B; 2.3 and 2.5: 22B with the connectors)
with random bf16 weights built directly on the GPU — transformer, text connectors, video VAE, audio VAE and
vocoder from the diffusers configs in ``bench/real_configs.py`` (which says what is unverified for 2.5). The
Gemma text encoder is replaced by precomputed random prompt embeddings of its output shape (1024 tokens x 49
hidden states x 3840), so ``text_encode_s`` covers the connectors only. Defaults: 768x512, 121 frames, 8 steps
(distilled preset, guidance 1, one stage). A random-weight model of real size runs as fast as the trained one; it
says nothing about quality.

``--mode extend|context|reference|keyframe`` (or several, comma-separated; ``all``): besides the scene without
memory, time a scene whose conditions come from storygraph's own planner in each mode (``--characters`` characters each with one remembered frame, on a cut;
extend: a continuous transition with the parent's last 9 frames) and report its seconds, denoise seconds and share,
peak memory, the tokens per step and the ratio to the scene without memory, under ``modes``. ``reference`` builds a random IC-LoRA
(rank 32 at real size, on the video attention and FFN) loaded through ``load_lora_weights``, and one reference
sheet looped over the clip (``--reference-frames 1``: a single frame).

Without ``--mode`` it also times a continuous-transition scene (9 parent frames at index 0) with the condition
cache off and on, and reports the share of the scene spent VAE-encoding the condition.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_configs import PUBLISHED_PARAMS, TEXT_SHAPE, configs  # noqa: E402

PUBLISHED_H100_S = 9.5  # LTX-2, 768x512, 121 frames, 8 distilled steps, bf16, H100 (Lightricks)
MODES = ("extend", "context", "reference", "keyframe")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_real_pipeline(device: str, version: str = "2.0"):
    """LTX2ConditionPipeline at the published size of ``version``, random bf16 weights created on ``device``."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2ConditionPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

    cfg = configs(version)
    classes = {"transformer": LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors,
               "vae": AutoencoderKLLTX2Video, "audio_vae": AutoencoderKLLTX2Audio,
               "vocoder": LTX2Vocoder if version == "2.0" else LTX2VocoderWithBWE}
    parts, params = {}, {}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # create weights as bf16 directly: 19B in fp32 would not fit
    try:
        with torch.device(device), torch.no_grad():
            for name, cls in classes.items():
                torch.manual_seed(0)
                m = cls.from_config(cfg[name]).eval()
                if any(p.dtype != torch.bfloat16 for p in m.parameters()):
                    m.to(torch.bfloat16)
                parts[name] = m
                params[name] = sum(p.numel() for p in m.parameters())
    finally:
        torch.set_default_dtype(old)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(cfg["scheduler"])
    pipe = LTX2ConditionPipeline(scheduler=scheduler, text_encoder=None, tokenizer=None, audio_scheduler=None, **parts)
    return pipe, params


def random_prompt_encoder(device: str, version: str = "2.0", prompt_tokens: int = 128):
    """Stand-in for the Gemma text encoder: random hidden states of its output shape, left-padded like its
    tokenizer."""
    import torch

    tokens, states, hidden = TEXT_SHAPE[version]
    g = torch.Generator(device).manual_seed(0)
    embeds = torch.randn(1, tokens, states * hidden, generator=g, device=device, dtype=torch.bfloat16)
    mask = torch.zeros(1, tokens, dtype=torch.long, device=device)
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


class TokenCount:
    """How many video tokens the transformer sees per call (the clip's and the appended ones)."""

    def __init__(self, transformer):
        self.transformer, self.seen = transformer, None

    def __enter__(self):
        def hook(module, args, kwargs):
            if self.seen is None:
                n = int(kwargs["num_frames"]) * int(kwargs["height"]) * int(kwargs["width"])
                self.seen = {"clip": n, "appended": int(kwargs["hidden_states"].shape[1]) - n}
        self.handle = self.transformer.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def memory_request(mode: str, req, characters: int, work: Path, reference_frames: int):
    """The scene ``req`` with the conditions storygraph's planner gives it in ``mode`` (random remembered frames)."""
    from dataclasses import replace

    import numpy as np

    from storygraph.domain import Appearance, Candidate, Character, Environment, SceneSpec, Transition
    from storygraph.engine import media, sheets
    from storygraph.engine.conditioning import plan_conditioning
    from storygraph.engine.generators import ReferenceInput

    rs = np.random.RandomState(0)
    w, h = req.width, req.height

    def image(name):
        return str(media.save_image(work / f"{name}.png", (rs.rand(h, w, 3) * 255).astype(np.uint8)))

    cast = [Character(f"c{i}", f"Character {i}", "a person in a coat") for i in range(characters)]
    memories = {}
    for i, c in enumerate(cast):
        app = Appearance(id=f"a{i}", character_id=c.id, scene_id="s0", frame_index=0, frame_path=image(c.id),
                         strength=1.0, reinforced_clock=0.0, identity_score=0.9, clip=[], dino=[])
        memories[c.id] = [Candidate(app, score=1.0 - i / 10, relevance=0.8, retention=0.8, quality=0.9, identity=0.9)]
    spec = SceneSpec(id="s1", action="they walk", characters=tuple(c.id for c in cast), width=w, height=h,
                     frames=req.frames)
    place = Environment("pier", "a wooden pier at night", "The pier", image("pier"))
    if mode == "extend":
        parent = [(rs.rand(h, w, 3) * 255).astype(np.uint8) for _ in range(9)]
        plan = plan_conditioning(spec, Transition("s0", "s1", "continuous"), memories, parent, characters=cast,
                                 parent_characters=spec.characters, width=w, height=h)
    else:
        plan = plan_conditioning(spec, Transition("s0", "s1", "cut"), memories, None, characters=cast,
                                 environment=place, mode=mode, reference_available=True, width=w, height=h)
    reference = None
    if plan.sheet is not None:
        reference = ReferenceInput([sheets.compose(plan.sheet.panels, w, h)], loop=reference_frames != 1,
                                   description=sheets.describe(plan.sheet.panels, w, h))
    return replace(req, conditions=plan.conditions, reference=reference), plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--real-size", action="store_true", help="the published architecture (needs a big GPU)")
    size.add_argument("--tiny", action="store_true", help="the tiny random pipeline (the default)")
    ap.add_argument("--version", choices=("2.0", "2.3", "2.5"), default="2.0", help="LTX-2 checkpoint generation")
    ap.add_argument("--mode", default=None, help="also time a scene with memory in each of these modes (comma-separated: "
                    "extend, context, reference, keyframe; all)")
    ap.add_argument("--characters", type=int, default=2, help="remembered characters in the --mode scene")
    ap.add_argument("--reference-frames", type=int, choices=(0, 1), default=0,
                    help="reference mode: 0 loops the sheet over the clip (as trained), 1 gives one frame")
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
    modes = [] if not args.mode else list(MODES) if args.mode == "all" else [m.strip() for m in args.mode.split(",")]
    if any(m not in MODES for m in modes):
        ap.error(f"--mode: each of {', '.join(MODES)} (or all), got {args.mode!r}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from storygraph.engine.generators import ConditionInput, GenerationRequest, LTX2Generator

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1
    if args.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    t0 = time.perf_counter()
    if args.real_size:
        if args.device != "cuda":
            log("warning: --real-size on the CPU needs ~50 GB of RAM and hours")
        pipe, params = build_real_pipeline(args.device, args.version)
        lora = None
        if "reference" in modes:
            from storygraph.engine.tiny.ltx2 import make_ic_lora

            lora = make_ic_lora(pipe.transformer, work / "ic-lora", rank=32)
        gen = LTX2Generator(pipe, device=args.device, dtype=torch.bfloat16, vae_tiling=args.vae_tiling,
                            prompt_encoder=random_prompt_encoder(args.device, args.version), ic_lora=lora,
                            source=f"random:LTX-{args.version}")
        w, h, f = args.width or 768, args.height or 512, args.frames or 121
        model = (f"LTX-{args.version} architecture ({PUBLISHED_PARAMS[args.version]}), random bf16 weights (text "
                 "encoder replaced by random embeddings)")
    else:
        from storygraph.engine.tiny.ltx2 import make_ic_lora, make_ltx2

        folder = make_ltx2(work / "tiny-ltx2", version=args.version)
        lora = make_ic_lora(folder, work / "ic-lora") if "reference" in modes else None
        gen = LTX2Generator.from_pretrained(folder, device=args.device, vae_tiling=args.vae_tiling, ic_lora=lora)
        params = {n: sum(p.numel() for p in getattr(gen.pipe, n).parameters())
                  for n in ("transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder")}
        w, h, f = args.width or 128, args.height or 128, args.frames or 33
        model = f"tiny random LTX-{args.version} (storygraph.engine.tiny.ltx2)"
    build_s = time.perf_counter() - t0
    log(f"built {model} in {build_s:.1f}s: {sum(params.values()) / 1e9:.2f}B parameters")

    req = GenerationRequest(prompt="a woman in a red coat walks along the harbor at night", width=w, height=h,
                            frames=f, steps=args.steps, guidance=1.0, seed=0)
    t = time.perf_counter()
    gen.generate(req)  # warm-up: kernels, allocator, cuDNN/cuBLAS autotuning
    warmup_s = time.perf_counter() - t
    log(f"warm-up scene {warmup_s:.1f}s")
    with TokenCount(gen.pipe.transformer) as tokens:
        plain, last = _scene(gen, req, args.runs)
    log(f"scene {plain['total_s']:.2f}s (denoise {plain['denoise_s']:.2f}s, vae decode {plain['vae_decode_s']:.2f}s): "
        + json.dumps({k: v for k, v in plain.items() if k != "attempts"}))

    out = {
        "seconds_per_scene": round(plain["total_s"], 4),
        "denoise_s": round(plain["denoise_s"], 4),
        "denoise_share": round(plain["denoise_s"] / plain["total_s"], 4) if plain["total_s"] else None,
        "vae_encode_s": round(plain["vae_encode_s"], 4),
        "vae_decode_s": round(plain["vae_decode_s"], 4),
        "audio_decode_s": round(plain.get("audio_decode_s", 0.0), 4),
        "text_encode_s": round(plain["text_encode_s"], 4),
        "postprocess_s": round(plain.get("postprocess_s", 0.0), 4),
        "other_s": round(plain.get("other_s", 0.0), 4),
        "peak_gib": round(plain["peak_gib"], 3),
        "tokens": tokens.seen,
        "width": last.width, "height": last.height, "frames": last.num_frames, "steps": args.steps,
        "runs": args.runs, "warmup_s": round(warmup_s, 3), "build_s": round(build_s, 3),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "version": args.version, "preset": gen.preset.name,
        "model": model, "parameters": sum(params.values()), "parameters_by_component": params,
        "vae_tiling": gen.vae_tiling, "attempts": plain["attempts"],
        "torch": torch.__version__,
    }
    if args.real_size and args.device == "cuda" and args.version == "2.0":
        out["published_h100_s"] = PUBLISHED_H100_S
        out["ratio_to_published"] = round(plain["total_s"] / PUBLISHED_H100_S, 3)

    if modes:
        out["modes"] = {}
    for mode in modes:
        mreq, plan = memory_request(mode, req, args.characters, work, args.reference_frames)
        gen.generate(mreq)  # warm-up (and, in reference mode, loading the IC-LoRA)
        with TokenCount(gen.pipe.transformer) as mtokens:
            timed, mlast = _scene(gen, mreq, args.runs)
        out["modes"][mode] = {
            "plan_mode": plan.mode, "characters": args.characters,
            "records": [f"{r.role}/{r.mode} at {r.frame_index}" for r in plan.records],
            "seconds_per_scene": round(timed["total_s"], 4), "denoise_s": round(timed["denoise_s"], 4),
            "denoise_share": round(timed["denoise_s"] / timed["total_s"], 4) if timed["total_s"] else None,
            "vae_encode_s": round(timed["vae_encode_s"], 4), "peak_gib": round(timed["peak_gib"], 3),
            "tokens": mtokens.seen, "cache_hits": timed["cache_hits"],
            "ratio_to_plain": round(timed["total_s"] / plain["total_s"], 4) if plain["total_s"] else None,
            "denoise_ratio_to_plain": round(timed["denoise_s"] / plain["denoise_s"], 4) if plain["denoise_s"] else None,
            "reference": mlast.settings.get("reference"),
        }
        log(f"{mode} scene {timed['total_s']:.2f}s (denoise {timed['denoise_s']:.2f}s), tokens {mtokens.seen}")
        print(json.dumps(out), file=sys.stderr, flush=True)  # what is measured survives a failure further on
    if not modes and not args.no_conditioned:
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
        gen.upsampler = build_upsampler(args.device, args.version) if args.real_size else _tiny_upsampler(args.device)
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


def build_upsampler(device: str, version: str = "2.0"):
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    cfg = configs(version if version != "2.5" else "2.3")  # 2.5's upsampler is not in the converter: 2.3's shape
    torch.manual_seed(0)  # small (0.5B): built on the CPU, where its integer blur kernel can be made
    return LTX2LatentUpsamplerModel.from_config(cfg["latent_upsampler"]).eval().to(device, torch.bfloat16)


def _tiny_upsampler(device: str):
    from storygraph.engine.tiny.ltx2 import make_upsampler

    return make_upsampler().to(device).eval()


if __name__ == "__main__":
    raise SystemExit(main())
