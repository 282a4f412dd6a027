"""A story through ``storygraph run`` with every model at its published size: time and memory per scene.

    python bench/e2e.py                                   # tiny random models on the CPU: the plumbing
    python bench/e2e.py --device cuda --real-size         # published sizes, caps of 80, 48 and 24 GiB

It builds random-weight checkpoints in the layout users download and saves them: ``Lightricks/LTX-2`` in diffusers
form (transformer, text connectors, video and audio VAEs, vocoder, scheduler, the Gemma 3 12B text encoder and a
tokenizer folder that loads with ``from_pretrained``), CLIP ViT-L/14 and DINOv2 ViT-B/14 in transformers form. It
writes a story folder whose ``storygraph.toml`` points at them and runs ``storygraph run --timings`` on a 6-scene
cut of ``examples/harbor.yaml`` (two characters; continuous transitions and cuts), once per GPU memory cap
(``[models] memory_cap_gib``).

The first cap's run happens in a child process that calls the CLI in-process (the same command, arguments and
code path) and then, with the pipeline it loaded, times a bare diffusers ``LTX2ConditionPipeline`` call for every
scene's request (prompt, negative prompt, size, steps, sigmas, seed, conditions; ``output_type="pt"``): each
scene's ``ratio_to_pipeline`` is its wall time (model loading left out) over that call. The other caps run
``storygraph run`` as a plain subprocess.

Weights at real size are ~65 GB (transformer 38, Gemma 3 12B 24, the rest 3): more than the GPU machine's disk
(64 GB) and half its RAM. ``--fast-dir`` (default ``/dev/shm/sg-weights``, RAM-backed) takes the largest parts
while it stays under ``--fast-limit-gib`` (default 48, leaving RAM for the pinned copies a 24 GiB cap streams from);
the rest goes to ``--weights`` on disk, and the model folder links each part where it lives.

Prints one JSON object (also written to ``--out``, updated after each cap): ``load_s``, per scene the wall time and
every stage (plan, retrieve, condition, text encode, denoise, VAE decode, observe, media write and wait, commit),
``pipeline_s`` and ``ratio_to_pipeline``; ``gpu_busy`` (the generator's forward passes over wall time);
``peak_gib`` (the largest per-scene peak of allocated GPU memory, every resident model included); and per cap the
seconds per scene, placement and out-of-memory retries. Random weights measure speed and memory, never quality.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

EXAMPLE = ROOT / "examples" / "harbor.yaml"
#: six scenes of the example, two characters: continuous, cut, continuous, cut, continuous
SCENES = ("s01-arrival", "s02-package", "s04-meeting", "s05-beam", "s06-escape", "s07-dawn")
TRANSITIONS = (("s01-arrival", "s02-package", "continuous"), ("s02-package", "s04-meeting", "cut"),
               ("s04-meeting", "s05-beam", "continuous"), ("s05-beam", "s06-escape", "cut"),
               ("s06-escape", "s07-dawn", "continuous"))
GENERATOR_FORWARD = ("text_encode_s", "denoise_s", "vae_encode_s", "vae_decode_s", "audio_decode_s", "upsample_s")


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# -- the story ---------------------------------------------------------------------------------------------------
def write_story(path: Path, width: int, height: int, frames: int, steps: int) -> Path:
    import yaml

    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    scenes = [s for s in data["scenes"] if s["id"] in SCENES]
    for s in scenes:
        for key in ("width", "height", "frames", "fps", "steps", "guidance"):
            s.pop(key, None)
    chars = {c for s in scenes for c in s.get("characters", [])}
    envs = {s.get("environment") for s in scenes}
    data["story"]["id"] = "harbor-e2e"
    data["defaults"].update(width=width, height=height, frames=frames, fps=24, steps=steps, guidance=1.0)
    data["scenes"] = scenes
    data["characters"] = [c for c in data["characters"] if c["id"] in chars]
    data["environments"] = [e for e in data["environments"] if e["id"] in envs]
    data["transitions"] = [{"from": a, "to": b, "kind": k} for a, b, k in TRANSITIONS]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def story_words() -> list[str]:
    """Every word of the example story, for the tokenizer's vocabulary (prompts are made of them)."""
    import re

    from storygraph.engine.tiny.ltx2 import DEFAULT_WORDS

    words = re.findall(r"[a-z]+", EXAMPLE.read_text(encoding="utf-8").lower())
    return list(dict.fromkeys(list(DEFAULT_WORDS) + words))


# -- checkpoints -------------------------------------------------------------------------------------------------
def _gib(n: int) -> float:
    return round(n / 2**30, 2)


def build_real(weights: Path, fast: Path | None, fast_limit: int, device: str, layers: int = 0) -> dict:
    """Random-weight checkpoints at the published sizes; returns model folders and where each part went.

    ``layers`` > 0 keeps every width but only that many layers per stack (a CPU check of the layout)."""
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
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from real_configs import GEMMA3_12B, configs  # bench/real_configs.py: the Lightricks/LTX-2 configs
    from storygraph.engine.tiny.encoders import make_clip, make_dino
    from storygraph.engine.tiny.ltx2 import make_tokenizer

    weights.mkdir(parents=True, exist_ok=True)
    if fast is not None:
        fast.mkdir(parents=True, exist_ok=True)
    cfgs = configs("2.0")
    gemma = copy.deepcopy(GEMMA3_12B)
    if layers:
        cfgs["transformer"]["num_layers"] = layers
        gemma["text_config"]["num_hidden_layers"] = layers
        gemma["vision_config"]["num_hidden_layers"] = layers
        cfgs["connectors"]["text_proj_in_factor"] = layers + 1  # the encoder's hidden states: layers + embeddings
    classes = {"transformer": LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors,
               "vae": AutoencoderKLLTX2Video, "audio_vae": AutoencoderKLLTX2Audio, "vocoder": LTX2Vocoder}
    t0 = time.perf_counter()
    parts: dict = {}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # weights created in bf16: 19B + 12B in fp32 would not fit
    try:
        with torch.device(device), torch.no_grad():
            for name, cls in classes.items():
                torch.manual_seed(0)
                parts[name] = cls.from_config(cfgs[name]).eval().to(torch.bfloat16)
            torch.manual_seed(0)
            te_config = Gemma3Config(**gemma)
            parts["text_encoder"] = Gemma3ForConditionalGeneration(te_config).eval().to(torch.bfloat16)
    finally:
        torch.set_default_dtype(old)
    parts["scheduler"] = FlowMatchEulerDiscreteScheduler.from_config(cfgs["scheduler"])
    parts["tokenizer"] = make_tokenizer(story_words(), max_length=1024)
    pipe = LTX2ConditionPipeline(audio_scheduler=None, **parts)
    built_s = time.perf_counter() - t0
    sizes = {k: sum(p.numel() * p.element_size() for p in m.parameters())
             for k, m in parts.items() if isinstance(m, torch.nn.Module)}
    log(f"built in {built_s:.1f}s: " + ", ".join(f"{k} {_gib(v)} GiB" for k, v in sizes.items()))

    model = weights / "ltx-2"
    model.mkdir(parents=True, exist_ok=True)
    pipe.save_config(model)  # model_index.json
    where, fast_used = {}, 0
    t0 = time.perf_counter()
    for name in sorted(parts, key=lambda k: -sizes.get(k, 0)):
        size = sizes.get(name, 0)
        if fast is not None and fast_used + size <= fast_limit:
            dest, fast_used = fast / "ltx-2" / name, fast_used + size
        else:
            dest = model / name
        t = time.perf_counter()
        comp = parts.pop(name)
        if isinstance(comp, torch.nn.Module):
            save_module(comp, dest)
        else:
            comp.save_pretrained(dest)
        del comp
        if dest.parent != model:
            link = model / name
            if link.is_symlink() or link.exists():
                link.unlink() if link.is_symlink() else shutil.rmtree(link)
            link.symlink_to(dest, target_is_directory=True)
        where[name] = {"dir": str(dest.parent), "gib": _gib(size), "save_s": round(time.perf_counter() - t, 1)}
        log(f"saved {name} ({_gib(size)} GiB) to {dest} in {time.perf_counter() - t:.1f}s")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    del pipe
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc_dtype = "bfloat16"
    clip = make_clip(weights / "clip", size="vit-l-14", dtype=enc_dtype, device=device)
    dino = make_dino(weights / "dino", size="base", dtype=enc_dtype, device=device)
    return {"ltx2": str(model), "clip": clip, "dino": dino, "where": where, "build_s": round(built_s, 1),
            "save_s": round(save_s, 1), "encoders_s": round(time.perf_counter() - t0, 1),
            "gib": {k: _gib(v) for k, v in sizes.items()}}


def save_module(module, dest: Path, shard_bytes: int = 5 * 2**30) -> None:
    """Write a model as its own ``save_pretrained`` would (config.json, sharded safetensors with
    ``"format": "pt"`` metadata and an index, the library's file names), one shard in CPU memory at a time.

    transformers' ``save_pretrained`` spent 6x longer than safetensors' writes here, 2.6 minutes for Gemma 3 12B
    on two cores; the files are the same, and they load through the same ``from_pretrained``."""
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    if hasattr(module, "save_config"):  # diffusers ModelMixin
        module.save_config(dest)
        stem = "diffusion_pytorch_model"
    else:  # transformers PreTrainedModel
        module.config.save_pretrained(dest)
        if getattr(module, "generation_config", None) is not None:
            module.generation_config.save_pretrained(dest)
        stem = "model"
    state, seen = {}, set()
    for k, v in module.state_dict().items():
        if v.data_ptr() in seen:  # a tied weight (Gemma's lm_head is its embedding): stored once
            continue
        seen.add(v.data_ptr())
        state[k] = v
    shards, current, size = [], {}, 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if current and size + n > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += n
    shards.append(current)
    total = sum(v.numel() * v.element_size() for v in state.values())
    if len(shards) == 1:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in shards[0].items()},
                  str(dest / f"{stem}.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in shard.items()}, str(dest / fname),
                  metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    (dest / f"{stem}.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def build_tiny(weights: Path) -> dict:
    from storygraph.engine.tiny.encoders import make_encoders
    from storygraph.engine.tiny.ltx2 import make_ltx2

    ltx = make_ltx2(weights / "ltx-2", with_upsampler=False, words=story_words())
    return {"ltx2": str(ltx), **make_encoders(weights)}


def build(args) -> dict:
    marker = Path(args.weights) / "built.json"
    if marker.exists():
        log(f"weights already built: {marker}")
        return json.loads(marker.read_text())
    if args.real_size:
        fast = Path(args.fast_dir) if args.fast_dir else None
        limit = int(args.fast_limit_gib * 2**30)
        Path(args.weights).mkdir(parents=True, exist_ok=True)
        if fast is not None:
            fast.mkdir(parents=True, exist_ok=True)
            limit = min(limit, shutil.disk_usage(fast).free - 2 * 2**30)
        log("disk free:", {str(p): _gib(shutil.disk_usage(p).free) for p in filter(None, [Path(args.weights), fast])})
        info = build_real(Path(args.weights), fast, limit, args.device, args.layers)
    else:
        info = build_tiny(Path(args.weights))
    marker.write_text(json.dumps(info))
    return info


# -- one story run per cap ---------------------------------------------------------------------------------------
def story_dir(work: Path, models: dict, cap: float, device: str) -> Path:
    from storygraph.config import Config

    d = work / f"story-cap{cap:g}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    # the observer's towers run eagerly: CUDA-graph pools would hold GPU memory the cap leaves to LTX-2
    Config().with_overrides(models={"ltx2": models["ltx2"], "clip": models["clip"], "dino": models["dino"],
                                    "device": device, "memory_cap_gib": float(cap),
                                    "encoder_cuda_graphs": False}).save(d)
    return d


def child_run(d: str, story: str, timings: str, out: str) -> int:
    """In a fresh process: ``storygraph run`` through the CLI's own entry point, then a bare pipeline call per
    scene's request with the pipeline that run loaded."""
    import torch

    from storygraph.cli import main as cli_main
    from storygraph.engine.generators.ltx2 import LTX2Generator

    seen: dict = {"gen": None, "requests": []}
    original = LTX2Generator.from_pretrained.__func__

    def capture(cls, *a, **kw):
        gen = original(cls, *a, **kw)
        inner = gen.generate

        def generate(request):
            seen["requests"].append(request)
            return inner(request)

        gen.generate = generate
        seen["gen"] = gen
        return gen

    LTX2Generator.from_pretrained = classmethod(capture)
    t = time.perf_counter()
    try:
        cli_main(["run", story, "--dir", d, "--timings", timings], standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
    run_s = time.perf_counter() - t
    gen = seen["gen"]
    out_data = {"run_s": run_s, "pipeline_s": [], "prompts": [r.prompt for r in seen["requests"]]}
    if gen is not None:
        for req in seen["requests"]:
            out_data["pipeline_s"].append(bare_pipeline_s(gen, req))
            log(f"bare pipeline call: {out_data['pipeline_s'][-1]:.3f}s")
        if gen.cuda:
            out_data["process_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    Path(out).write_text(json.dumps(out_data))
    return 0


def bare_pipeline_s(gen, req) -> float:
    """Seconds of one call of the loaded pipeline for ``req``: the pipeline's own prompt encoding, the request's
    conditions as the pipeline takes them (``LTX2VideoCondition`` on LTX-2's latent grid, context memory as
    ``LTX2MemoryCondition``), the distilled sigmas, the preset's extra arguments, ``output_type="pt"``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

    pipe = gen.pipe
    req = gen.normalise(req)
    conds = gen._conditions(req)
    sigmas = list(DISTILLED_SIGMA_VALUES) if req.steps == len(DISTILLED_SIGMA_VALUES) else None
    base = pipe.scheduler
    if sigmas is not None:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base.config, use_dynamic_shifting=False,
                                                                     shift_terminal=None)
    sync = torch.cuda.synchronize if gen.cuda else (lambda: None)
    try:
        sync()
        t = time.perf_counter()
        pipe(prompt=req.prompt, negative_prompt=req.negative_prompt or "", conditions=conds or None,
             width=req.width, height=req.height, num_frames=req.frames, frame_rate=float(req.fps),
             num_inference_steps=req.steps, sigmas=sigmas, guidance_scale=float(req.guidance),
             audio_guidance_scale=float(req.guidance), generator=torch.Generator("cpu").manual_seed(int(req.seed)),
             output_type="pt", return_dict=False, **gen.preset.call_kwargs)
        sync()
        return time.perf_counter() - t
    finally:
        pipe.scheduler = base


def summarise(records: list[dict], pipeline_s: list | None = None) -> dict:
    """Per-scene rows, gpu_busy and peak_gib from ``--timings`` records."""
    rows, busy, wall_total = [], 0.0, 0.0
    kinds = {b: k for _, b, k in TRANSITIONS}
    for i, r in enumerate(records):
        st, g = r["stages"], r["generator"]
        load = st.get("load_s", 0.0)
        wall = (r["wall_s"] or 0.0) - load
        forward = sum(g.get(k, 0.0) for k in GENERATOR_FORWARD)
        busy += forward
        wall_total += wall
        row = {"scene": r["scene"], "kind": kinds.get(r["scene"], "opening"), "wall_s": round(wall, 3),
               "load_s": round(load, 2),
               "stages": {"plan_s": st.get("plan_s"), "retrieve_s": st.get("retrieve_s"),
                          "condition_s": st.get("condition_s"), "text_encode_s": g.get("text_encode_s"),
                          "denoise_s": g.get("denoise_s"), "vae_encode_s": g.get("vae_encode_s"),
                          "vae_decode_s": g.get("vae_decode_s"), "audio_decode_s": g.get("audio_decode_s"),
                          "postprocess_s": g.get("postprocess_s"), "generate_s": st.get("generate_s"),
                          "observe_s": st.get("observe_s"), "media_write_s": st.get("media_write_s"),
                          "media_wait_s": st.get("media_wait_s"), "commit_s": st.get("commit_s")},
               "gpu_busy": round(forward / wall, 4) if wall else None, "peak_gib": r.get("peak_gib"),
               "attempts": r.get("attempts", []), "placement": (r.get("settings") or {}).get("placement"),
               "prompt_cached": (r.get("settings") or {}).get("prompt_cached")}
        row["stages"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row["stages"].items()}
        if pipeline_s and i < len(pipeline_s):
            row["pipeline_s"] = round(pipeline_s[i], 3)
            row["ratio_to_pipeline"] = round(wall / pipeline_s[i], 4)
        rows.append(row)
    peaks = [r["peak_gib"] for r in rows if r["peak_gib"] is not None]
    return {"scenes": rows, "gpu_busy": round(busy / wall_total, 4) if wall_total else None,
            "peak_gib": round(max(peaks), 2) if peaks else None,
            "s_per_scene": [r["wall_s"] for r in rows],
            "mean_s_per_scene_warm": round(sum(r["wall_s"] for r in rows[1:]) / max(1, len(rows) - 1), 3)}


def run_cap(i: int, cap: float, work: Path, models: dict, story: Path, device: str) -> dict:
    d = story_dir(work, models, cap, device)
    timings = work / f"timings-cap{cap:g}.jsonl"
    timings.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # less fragmentation under a cap
    t = time.perf_counter()
    child = None
    if i == 0:
        child = work / f"child-cap{cap:g}.json"
        cmd = [sys.executable, __file__, "--child-run", str(d), str(story), str(timings), str(child)]
    else:
        cmd = [sys.executable, "-m", "storygraph.cli", "run", str(story), "--dir", str(d), "--timings", str(timings)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    records = [json.loads(x) for x in timings.read_text().splitlines()] if timings.exists() else []
    extra = json.loads(child.read_text()) if child is not None and child.exists() else {}
    out = {"cap_gib": cap, "completed": proc.returncode == 0 and len(records) == len(SCENES),
           "process_s": round(elapsed, 1), **summarise(records, extra.get("pipeline_s"))}
    if extra.get("process_peak_gib") is not None:
        out["process_peak_gib"] = round(extra["process_peak_gib"], 2)
    if proc.returncode != 0:
        out["error"] = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
    log(f"cap {cap:g}: rc {proc.returncode}, {len(records)} scenes, {elapsed:.0f}s; " + proc.stderr[-800:])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--real-size", action="store_true", help="published sizes (a GPU with ~80 GB or a cap ladder)")
    ap.add_argument("--caps", default=None, help="GiB caps, comma-separated (default 80,48,24 on CUDA, 0 on the CPU)")
    ap.add_argument("--weights", default=None, help="where checkpoints are written (default: a temporary folder)")
    ap.add_argument("--fast-dir", default=None, help="RAM-backed folder for the largest parts (real size)")
    ap.add_argument("--fast-limit-gib", type=float, default=48.0)
    ap.add_argument("--layers", type=int, default=0, help="real widths with this many layers per stack (a check)")
    ap.add_argument("--size", default=None, help="WxHxF (default 768x512x121 real size, 64x64x9 tiny)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the JSON here (updated after each cap)")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--child-run", nargs=4, metavar=("DIR", "STORY", "TIMINGS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.child_run:
        return child_run(*args.child_run)

    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1
    tmp = None
    if args.weights is None:
        tmp = tempfile.mkdtemp(prefix="sg-e2e-")
        args.weights = tmp
    if args.real_size and args.fast_dir is None and cuda:
        args.fast_dir = "/dev/shm/sg-weights"
    caps = [float(c) for c in (args.caps or ("80,48,24" if cuda else "0")).split(",")]
    w, h, f = map(int, (args.size or ("768x512x121" if args.real_size else "64x64x9")).split("x"))
    steps = args.steps or (8 if args.real_size else 2)

    t = time.perf_counter()
    models = build(args)
    build_s = time.perf_counter() - t
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
              "model": ("LTX-2 19B + Gemma 3 12B + CLIP ViT-L/14 + DINOv2 ViT-B/14, random bf16 weights"
                        if args.real_size else "tiny random LTX-2, CLIP and DINOv2") +
                       (f" ({args.layers} layers per stack)" if args.layers else ""),
              "request": f"{w}x{h}x{f}, {steps} steps", "weights": {k: models.get(k) for k in
                                                                  ("where", "gib", "build_s", "save_s")},
              "weights_ready_s": round(build_s, 1), "caps": {}}
    if args.build_only:
        print(json.dumps(result))
        return 0
    work = Path(args.weights) / "runs"
    work.mkdir(parents=True, exist_ok=True)
    story = write_story(work / "story.yaml", w, h, f, steps)
    for i, cap in enumerate(caps):
        r = run_cap(i, cap, work, models, story, args.device)
        result["caps"][f"{cap:g}"] = r
        if i == 0:
            result["load_s"] = r["scenes"][0]["load_s"] if r["scenes"] else None
            for key in ("scenes", "gpu_busy", "peak_gib"):
                result[key] = r.get(key)
        if args.out:
            Path(args.out).write_text(json.dumps(result))
    result["s_per_scene_by_cap"] = {k: v.get("s_per_scene") for k, v in result["caps"].items()}
    if args.out:
        Path(args.out).write_text(json.dumps(result))
    print(json.dumps(result))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
