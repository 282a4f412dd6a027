"""LTX-2 video (and audio) generation through diffusers: LTX-2.0, 2.3 and 2.5 checkpoints in diffusers form.

``LTX2Generator.from_pretrained(path_or_id)`` loads the pipeline from a local diffusers folder or a hub
id (only local folders and the Hugging Face cache with ``HF_HUB_OFFLINE=1``); a missing model raises
``ModelNotFound`` whose message says to download ``Lightricks/LTX-2`` in diffusers form and to point
``models.ltx2`` in ``<story dir>/storygraph.toml`` at the folder. The checkpoint's version and variant are
read from the folder's JSON files (:mod:`.versions`) and pick the preset's details (STG block, image CRF,
cross-modal timestep).

What a call does:

* :class:`ConditionInput`s (output-frame indices) become ``LTX2VideoCondition``s at latent indices (LTX-2 places
  a condition on the 8-frame latent grid: frame 0, then frames 1, 9, 17, ...);
* :class:`MemoryInput`s become context memory: clean tokens before the clip (``ltx2_memory.LTX2MemoryPipeline``);
* a request's :class:`ReferenceInput` runs the scene through ``LTX2InContextPipeline`` (the same loaded
  components) with the IC-LoRA from ``ic_lora`` loaded by ``load_lora_weights``; its
  ``reference_downscale_factor`` is read from the LoRA file's header, as Lightricks' tools do. The adapter is
  switched off for every scene without a reference;
* the prompt is encoded once (Gemma 3 or 4 + the text connectors) and reused by both stages;
* presets (per version, :func:`.versions.preset_for`): ``distilled`` (8 steps on the distilled sigma schedule,
  guidance 1, no STG or modality guidance) and ``full`` (the dev model's recipe: CFG, STG on the version's
  block, modality guidance, rescale; audio guidance 7);
* with a latent upsampler, stage 1 runs at half size, the latents are upsampled 2x, and stage 2 refines
  them for 3 steps on the distilled stage-2 schedule at the requested size; memory is released
  between stages;
* bf16 on CUDA (float32 on the CPU); model or sequential CPU offload and VAE tiling are options;
* on CUDA the parts are placed to fit the card or ``memory_cap_gib`` (see :mod:`.gpu_memory`): everything
  resident, or the Gemma text encoder streamed from pinned CPU memory (it need not sit on the GPU while the
  transformer denoises), or the transformer streamed too;
* a CUDA out-of-memory error is retried: first with VAE tiling, then the text encoder streamed, then the
  transformer streamed (with ``offload`` set: model offload, then sequential offload), then at a lower size
  (0.75x per side, then fewer frames). Each retry is a line in ``GenerationResult.attempts``; the scene is only
  given up (``GenerationFailed``) when every step ran out;
* prompt encodings are cached by prompt (:class:`~.gpu_memory.PromptCache`): a retry or another take of the
  same prompt skips the text encoder;
* VAE-encoded condition and memory latents are cached by the content of their own frames and the size they
  are encoded at, so a retry, another take, or a memory reused by a later scene skips the VAE encoder (at
  real size on an H100 encoding 9 condition frames is under 1 % of a scene, see ``bench/generate.py``; the
  cache matters more on the CPU and with offload);
* ``on_step(step)`` is called after every denoising step: the engine's progress hook, and the seam the
  tests use to inject a real ``torch.OutOfMemoryError``.
"""

from __future__ import annotations

import gc
import os
import time
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional, Union

from .base import (
    AudioTrack, ConditionInput, GenerationFailed, GenerationRequest, GenerationResult, MemoryInput, ReferenceInput,
    fitting_downscale,
)
from .versions import NO_EXTRA_GUIDANCE, PRESET_NAMES, Checkpoint, Preset, detect, detect_pipe, preset_for

OFFLOAD_MODES = (None, "model", "sequential")

_DIFFUSERS_FORM = "LTX-2 is loaded in diffusers form (the Lightricks/LTX-2 folder with model_index.json)"


class _Clock:
    """Per-stage wall time; on CUDA each boundary synchronises so GPU work is charged to its stage."""

    def __init__(self, torch, cuda: bool):
        self.torch = torch
        self.cuda = cuda
        self.t = defaultdict(float)
        self.current = "setup"
        self.failed_in: Optional[str] = None
        self.cache_hits = 0
        self.prompt_cached = False

    def now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()

    def mark(self):
        """A point in the GPU's stream (a recorded CUDA event), or the time on the CPU: no synchronisation, so
        the denoising loop is timed without stalling it at every step."""
        if not self.cuda:
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def between(self, start, end) -> float:
        """Seconds from mark ``start`` to mark ``end`` (waits for ``end`` on the GPU)."""
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000.0

    @contextmanager
    def stage(self, name: str):
        prev, self.current = self.current, name
        t0 = self.now()
        try:
            yield
        except BaseException:
            self.failed_in = self.failed_in or name.removesuffix("_s")
            raise
        finally:
            self.t[name] += self.now() - t0
            self.current = prev


class LTX2Generator:
    """A :class:`~storygraph.engine.generators.base.Generator` running LTX-2 through diffusers."""

    name = "ltx2"

    def __init__(self, pipe, *, device: Optional[str] = None, dtype=None, offload: Optional[str] = None,
                 vae_tiling: bool = False, upsampler=None, preset: Union[str, Preset] = "distilled",
                 cache_condition_latents: bool = True, cache_size: int = 32,
                 on_step: Optional[Callable[[int], None]] = None,
                 prompt_encoder: Optional[Callable] = None, max_sequence_length: Optional[int] = None,
                 max_downsizes: int = 3, source: str = "", checkpoint: Optional[Checkpoint] = None,
                 ic_lora: Optional[Union[str, os.PathLike]] = None, memory_cap_gib: float = 0.0,
                 text_encoder: str = "auto", prompt_cache_size: int = 2):
        """``pipe``: a loaded LTX-2 pipeline (any of diffusers' LTX-2 pipeline classes; its components are shared,
        not copied). ``preset``: ``distilled``, ``full``, ``auto`` (the checkpoint's own variant) or a
        :class:`Preset`. ``checkpoint``: what the model is (read from ``pipe``'s configs when not given).
        ``ic_lora``: an IC-LoRA ``.safetensors`` file for requests with a reference (loaded on first use).
        ``memory_cap_gib``: the GPU memory the generator may use (0: the card); ``text_encoder``: where the text
        encoder waits between prompts (``auto``, ``gpu``, ``stream``; see :mod:`.gpu_memory`)."""
        import torch

        from .gpu_memory import TEXT_ENCODER_MODES, PromptCache, set_memory_cap
        from .ltx2_memory import LTX2MemoryPipeline

        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
        if text_encoder not in TEXT_ENCODER_MODES:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODER_MODES}, got {text_encoder!r}")
        self.pipe = LTX2MemoryPipeline.sharing(pipe)
        self.checkpoint = checkpoint or detect_pipe(self.pipe)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.dtype = dtype or (torch.bfloat16 if self.cuda else torch.float32)
        self.offload = offload if self.cuda else None  # offload moves weights to the CPU: moot on the CPU
        self.vae_tiling = bool(vae_tiling)
        self.upsampler = upsampler
        if isinstance(preset, str):
            if preset == "auto":
                preset = "distilled" if self.checkpoint.variant == "distilled" else "full"
            if preset not in PRESET_NAMES:
                raise ValueError(f"preset must be one of {', '.join(PRESET_NAMES)} or auto, got {preset!r}")
            preset = preset_for(self.checkpoint.version, preset)
        self.preset = preset
        self.cache_condition_latents = cache_condition_latents
        self.cache_size = cache_size
        self._latent_cache: "OrderedDict[tuple, Any]" = OrderedDict()
        self.cache_hits = 0
        self.on_step = on_step
        self.prompt_encoder = prompt_encoder
        self.max_sequence_length = max_sequence_length
        self.max_downsizes = max_downsizes
        self.source = source
        self.ic_lora = Path(ic_lora) if ic_lora else None
        self._ic_pipe = None
        self._lora_loaded = False
        self.reference_downscale_factor = 1
        self._downsizes = 0
        self.text_encoder_mode = text_encoder
        self.placement = None  # a gpu_memory.Placement on CUDA without offload: where the large parts live
        self.cap_bytes = set_memory_cap(self.device, memory_cap_gib) if self.cuda else None
        self.prompt_cache = PromptCache(prompt_cache_size)
        self._base_scheduler = self.pipe.scheduler
        self.pipe.set_progress_bar_config(disable=True)
        self._place()
        if self.vae_tiling:
            self.pipe.vae.enable_tiling()

    # ------------------------------------------------------------------------------------------------
    # loading

    @classmethod
    def from_pretrained(cls, path_or_id: Union[str, os.PathLike], device: Optional[str] = None, dtype=None,
                        offload: Optional[str] = None, vae_tiling: bool = False, upsampler=None,
                        base_dir: Optional[Union[str, os.PathLike]] = None,
                        ic_lora: Optional[Union[str, os.PathLike]] = None, **kwargs) -> "LTX2Generator":
        """Load LTX-2 (diffusers form; 2.0, 2.3 or 2.5) from a folder or hub id.

        ``upsampler``: None (one stage), True (the ``latent_upsampler`` folder inside the model, as
        ``Lightricks/LTX-2`` ships it), a folder or hub id of an ``LTX2LatentUpsamplerModel`` (or of a
        pipeline folder holding ``latent_upsampler/``), or a loaded model. ``ic_lora``: an IC-LoRA file (or a
        folder holding one) for reference-mode scenes. Relative paths resolve against ``base_dir`` (the story
        dir). Raises ``ModelNotFound`` when the weights are not here.
        """
        import torch

        from ..encoders import ModelNotFound, hub_offline, looks_like_hub_id, resolve_source
        from .ltx2_memory import LTX2MemoryPipeline

        source = resolve_source(path_or_id, base_dir)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        checkpoint = None
        if os.path.isdir(source):
            if not (Path(source) / "model_index.json").exists():
                raise ModelNotFound("ltx2", source, "the folder has no model_index.json: " + _DIFFUSERS_FORM)
            checkpoint = detect(source)
        elif not looks_like_hub_id(source):
            raise ModelNotFound("ltx2", source, "no such folder; " + _DIFFUSERS_FORM)
        lora = resolve_ic_lora(ic_lora, base_dir) if ic_lora else None
        load_kw = {"dtype": dtype}
        if hub_offline():
            load_kw["local_files_only"] = True
        try:
            pipe = LTX2MemoryPipeline.from_pretrained(source, **load_kw)
        except (OSError, ValueError) as exc:  # hub errors derive from these
            if os.path.isdir(source):
                raise  # the files are here but broken: not a missing model
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelNotFound("ltx2", source, f"{type(exc).__name__}: {first}; {_DIFFUSERS_FORM}") from exc
        up = None
        if upsampler is not None and upsampler is not False and upsampler != "":
            up = load_upsampler(upsampler, source, base_dir, dtype)
        return cls(pipe, device=str(dev), dtype=dtype, offload=offload, vae_tiling=vae_tiling, upsampler=up,
                   source=source, checkpoint=checkpoint, ic_lora=lora, **kwargs)

    # ------------------------------------------------------------------------------------------------
    # placement and memory

    def _place(self) -> None:
        if self.cuda and self.offload is None:
            self._place_by_budget(self.placement)  # the IC-LoRA pipeline shares these modules
        else:
            for pipe in (self.pipe, self._ic_pipe):
                if pipe is None:
                    continue
                if self.offload == "model":
                    pipe.enable_model_cpu_offload(device=self.device)
                elif self.offload == "sequential":
                    pipe.enable_sequential_cpu_offload(device=self.device)
                else:
                    pipe.to(self.device)
        if self.upsampler is not None:
            self.upsampler.to("cpu" if self.offload else self.device)

    def _modules(self) -> dict:
        import torch

        return {k: m for k, m in self.pipe.components.items() if isinstance(m, torch.nn.Module)}

    def _place_by_budget(self, placement=None) -> None:
        """Put each part where ``placement`` says (default: the first placement that fits the budget, with room
        for a scene of the default size): streamed parts first, so a part leaving the GPU frees it."""
        from ...domain import GenerationDefaults
        from .gpu_memory import activation_reserve, memory_budget, module_bytes, plan_placement, stream_module

        modules = self._modules()
        if placement is None:
            sizes = {k: module_bytes(m) for k, m in modules.items()}
            on_device = sum(sizes[k] for k, m in modules.items()
                            if next(m.parameters(), None) is not None and next(m.parameters()).device.type == "cuda")
            d = GenerationDefaults()
            placement = plan_placement(sizes, memory_budget(self.device, self.cap_bytes) + on_device,
                                       activation_reserve(d.width, d.height, d.frames), self.text_encoder_mode)
        streamed = {"text_encoder": placement.text_encoder == "stream",
                    "transformer": placement.transformer == "stream"}
        for name, m in modules.items():
            if streamed.get(name):
                stream_module(m, self.device)
        self.release()
        for name, m in modules.items():
            if not streamed.get(name):
                m.to(self.device)
        self.placement = placement

    #: After a scene, cached blocks are given back only when the allocator holds more than this share of what the
    #: process may use; below it the next scene reuses them, and a collection in a process holding a 30B-parameter
    #: pipeline costs a tenth of a second or more.
    RELEASE_ABOVE = 0.85

    def release(self, when_pressed: bool = False) -> None:
        """Give cached allocator blocks back between stages and after a failure (CUDA only); ``when_pressed``: only
        when the allocator holds more than :attr:`RELEASE_ABOVE` of the cap (or of the card)."""
        if not self.cuda:
            return
        import torch

        if when_pressed:
            limit = self.cap_bytes or torch.cuda.get_device_properties(self.device).total_memory
            if torch.cuda.memory_reserved(self.device) < self.RELEASE_ABOVE * limit:
                return
        gc.collect()
        torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the pipeline and free its memory."""
        self.pipe = None
        self._ic_pipe = None
        self.upsampler = None
        self._latent_cache.clear()
        self.prompt_cache.clear()
        self.release()

    # ------------------------------------------------------------------------------------------------
    # generation

    @property
    def temporal_stride(self) -> int:
        return int(self.pipe.vae_temporal_compression_ratio)

    @property
    def size_multiple(self) -> int:
        # the pipeline wants multiples of 32; with a 2x upsampler stage 1 runs at half size
        return 64 if self.upsampler is not None else 32

    def normalise(self, request: GenerationRequest) -> GenerationRequest:
        """The request with a size the pipeline accepts: sides rounded down to the size multiple, frames to
        8k+1 (the VAE's temporal grid)."""
        m, s = self.size_multiple, self.temporal_stride
        w = max(m, int(request.width) // m * m)
        h = max(m, int(request.height) // m * m)
        f = max(1, (int(request.frames) - 1) // s * s + 1)
        return replace(request, width=w, height=h, frames=f, steps=max(1, int(request.steps)))

    def generate(self, request: GenerationRequest) -> GenerationResult:
        import torch

        req = self.normalise(request)
        attempts: list = []
        self._downsizes = 0
        while True:
            failed_at = None
            try:
                result = self._run(req)
            except torch.OutOfMemoryError:
                failed_at = self._stage
            if failed_at is None:
                result.attempts = attempts
                if (req.width, req.height, req.frames) != (request.width, request.height, request.frames):
                    result.settings["requested"] = f"{request.width}x{request.height}x{request.frames}"
                return result
            self.release()
            size_before = req.size()
            step = self._fallback(req)
            if step is None:
                attempts.append(f"CUDA out of memory at {size_before} during {failed_at}; nothing left to try")
                raise GenerationFailed(f"LTX-2 ran out of memory at every fallback for {request.size()}", attempts)
            what, req = step
            attempts.append(f"CUDA out of memory at {size_before} during {failed_at}; retrying with {what}")

    def _fallback(self, req: GenerationRequest):
        """The next change after an out-of-memory error, applied: ``(description, request)`` or None."""
        if self.placement is not None:
            from .gpu_memory import next_rung

            step = next_rung(self.placement, self.vae_tiling)
            if step is not None:
                what, placement, tiling = step
                if tiling and not self.vae_tiling:
                    self.vae_tiling = True
                    self.pipe.vae.enable_tiling()
                if placement != self.placement:
                    self.prompt_cache.clear()
                    self._place_by_budget(placement)
                return what, req
            return self._downsize(req)
        if not self.vae_tiling:
            self.vae_tiling = True
            self.pipe.vae.enable_tiling()
            return "VAE tiling", req
        if self.cuda and self.offload is None:
            self.offload = "model"
            self._place()
            return "model CPU offload", req
        if self.cuda and self.offload == "model":
            self.offload = "sequential"
            self._place()
            return "sequential CPU offload", req
        return self._downsize(req)

    def _downsize(self, req: GenerationRequest):
        if self._downsizes >= self.max_downsizes:
            return None
        m, s = self.size_multiple, self.temporal_stride
        w = max(m, int(req.width * 0.75) // m * m)
        h = max(m, int(req.height * 0.75) // m * m)
        if (w, h) != (req.width, req.height):
            self._downsizes += 1
            return f"a lower size {w}x{h} (was {req.width}x{req.height})", replace(req, width=w, height=h)
        f = max(1, ((req.frames - 1) // 2) // s * s + 1)
        if f != req.frames:
            self._downsizes += 1
            return f"fewer frames {f} (was {req.frames})", replace(req, frames=f)
        return None

    @property
    def _stage(self) -> str:
        clock = getattr(self, "_clock", None)
        if clock is None:
            return "setup"
        return (clock.failed_in or clock.current).removesuffix("_s")

    def _run(self, req: GenerationRequest) -> GenerationResult:
        import torch

        pipe = self.pipe
        clock = self._clock = _Clock(torch, self.cuda)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t_start = clock.now()
        reference = req.reference
        if reference is not None:
            pipe = self._reference_pipe()
            if any(isinstance(c, MemoryInput) for c in req.conditions):
                raise ValueError("a request with a reference sheet takes no context memory: the sheet carries it")
        elif self._lora_loaded:
            self.pipe.transformer.disable_lora()  # the IC-LoRA only for scenes that give it a reference
        generator = torch.Generator("cpu").manual_seed(int(req.seed))
        guidance = float(req.guidance)
        audio_guidance = self.preset.audio_guidance if self.preset.name == "full" else guidance
        cfg = guidance > 1.0 or audio_guidance > 1.0
        with clock.stage("text_encode_s"):
            embeds = self._encode_prompt(req, cfg)
        common = dict(self.preset.call_kwargs)
        common.update(
            guidance_scale=guidance, audio_guidance_scale=audio_guidance, frame_rate=float(req.fps),
            num_frames=req.frames, generator=generator, callback_on_step_end=self._step_callback,
            callback_on_step_end_tensor_inputs=["latents"], use_cross_timestep=self.preset.use_cross_timestep,
            return_dict=False, **embeds,
        )
        two_stage = self.upsampler is not None

        conds = self._conditions(req)
        ref_cond = None if reference is None else self._reference_condition(reference, req.frames)

        def run(width: int, height: int, **kw):
            if ref_cond is not None:  # the LoRA's factor, as far as this stage's size allows
                factor = fitting_downscale(height, width, self.reference_downscale_factor,
                                           int(pipe.vae_spatial_compression_ratio))
                kw.update(reference_conditions=[ref_cond], reference_downscale_factor=factor)
            return pipe(conditions=conds or None, width=width, height=height, **kw)

        with self._instrumented(clock, pipe) as end_of_stage:
            if not two_stage:
                with self._scheduler(fixed=self._stage1_sigmas(req) is not None):
                    video, audio = run(req.width, req.height, num_inference_steps=req.steps,
                                       sigmas=self._stage1_sigmas(req), output_type="pt", **common)
            else:
                from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

                with self._scheduler(fixed=self._stage1_sigmas(req) is not None):
                    latents, audio_latents = run(req.width // 2, req.height // 2, num_inference_steps=req.steps,
                                                 sigmas=self._stage1_sigmas(req), output_type="latent", **common)
                end_of_stage("denoise_stage1_s")
                self.release()
                with clock.stage("upsample_s"):
                    latents = self._upsample(latents)
                self.release()
                sig2 = list(STAGE_2_DISTILLED_SIGMA_VALUES)[: self.preset.stage2_steps]
                # stage 2 is the distilled refinement of every recipe: no guidance of any kind
                stage2 = dict(common, **NO_EXTRA_GUIDANCE, guidance_scale=1.0, audio_guidance_scale=1.0)
                if cfg:  # stage 2 refines without guidance: positive embeddings only
                    for k in ("negative_prompt_embeds", "negative_prompt_attention_mask"):
                        stage2.pop(k, None)
                with self._scheduler(fixed=True):
                    video, audio = run(req.width, req.height, latents=latents, audio_latents=audio_latents,
                                       num_inference_steps=len(sig2), sigmas=sig2, noise_scale=sig2[0],
                                       output_type="pt", **stage2)
                del latents, audio_latents
        with clock.stage("postprocess_s"):
            # uint8 on the device, then one small copy: (F, C, H, W) in [0, 1] -> (F, H, W, 3)
            frames = (video[0] * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            track = None
            if audio is not None:
                samples = audio[0].detach().float().cpu().numpy()
                track = AudioTrack(samples=samples, sample_rate=int(pipe.vocoder.config.output_sampling_rate))
        del video, audio
        self.release(when_pressed=True)
        timings = dict(clock.t)
        for key in ("text_encode_s", "denoise_s", "vae_encode_s", "vae_decode_s", "audio_decode_s"):
            timings.setdefault(key, 0.0)
        timings["total_s"] = clock.now() - t_start
        # pipeline bookkeeping outside the named stages: latent/condition preparation, unpacking, release
        parts = sum(v for k, v in timings.items() if k != "total_s" and not k.startswith("denoise_stage"))
        timings["other_s"] = max(0.0, timings["total_s"] - parts)
        self._clock = None
        return GenerationResult(
            frames=frames, audio=track, timings=timings, peak_gib=self._peak_gib(), width=int(frames.shape[2]),
            height=int(frames.shape[1]), num_frames=int(frames.shape[0]), seed=int(req.seed),
            settings={"preset": self.preset.name, "steps": req.steps, "guidance": req.guidance, "fps": req.fps,
                      "stages": 2 if two_stage else 1, "offload": self.offload, "vae_tiling": self.vae_tiling,
                      "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                      "condition_cache_hits": clock.cache_hits, "prompt_cached": clock.prompt_cached,
                      "placement": self.placement.describe() if self.placement is not None else None,
                      "ltx_version": self.checkpoint.version,
                      "memories": sum(isinstance(c, MemoryInput) for c in req.conditions),
                      "reference": None if reference is None else
                      {"ic_lora": str(self.ic_lora), "downscale_factor": self.reference_downscale_factor,
                       "frames": req.frames if reference.loop else 1}},
        )

    # ------------------------------------------------------------------------------------------------
    # pieces of a run

    def _conditions(self, req: GenerationRequest) -> list:
        """diffusers conditions for the request: ``LTX2VideoCondition`` at latent indices, and context memory."""
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        from .ltx2_memory import LTX2MemoryCondition

        s = self.temporal_stride
        crf = self.preset.image_crf
        out = []
        for c in req.conditions:
            if isinstance(c, MemoryInput):
                out.append(LTX2MemoryCondition(frames=self._loaded(c), before=int(c.before), strength=float(c.strength),
                                               downscale=int(c.downscale), crf=crf))
                continue
            if not isinstance(c, ConditionInput):
                raise TypeError(f"conditions must be ConditionInput or MemoryInput, got {type(c).__name__}")
            idx = int(c.index) if c.index >= 0 else req.frames + int(c.index)
            idx = min(max(idx, 0), req.frames - 1)
            latent_idx = 0 if idx == 0 else (idx - 1) // s + 1
            out.append(LTX2VideoCondition(frames=self._loaded(c), index=latent_idx, strength=float(c.strength),
                                          crf=crf))
        return out

    @staticmethod
    def _loaded(c):
        return c.load()  # (F, H, W, 3) uint8; one frame is an image to diffusers (re-compressed at the CRF)

    # ------------------------------------------------------------------------------------------------
    # reference (IC-LoRA)

    def _reference_pipe(self):
        """``LTX2InContextPipeline`` over the loaded components, with the IC-LoRA loaded and switched on."""
        if not self._lora_loaded:
            self.load_ic_lora()
        self.pipe.transformer.enable_lora()
        return self._ic_pipe

    def load_ic_lora(self) -> None:
        """Load the configured IC-LoRA into the shared transformer (through ``load_lora_weights``) and read its
        ``reference_downscale_factor``. Done once, on the first reference scene."""
        if self.ic_lora is None:
            raise ValueError("a reference sheet needs an IC-LoRA: set [models] ic_lora in storygraph.toml")
        try:
            import peft  # noqa: F401  (load_lora_weights needs the PEFT backend)
        except ImportError as exc:  # pragma: no cover - peft is a dependency
            raise ImportError("reference mode loads an IC-LoRA through peft: pip install peft") from exc
        if self._ic_pipe is None:
            import inspect

            from diffusers import LTX2InContextPipeline

            params = set(inspect.signature(LTX2InContextPipeline.__init__).parameters)
            self._ic_pipe = LTX2InContextPipeline(**{k: v for k, v in self.pipe.components.items() if k in params})
            self._ic_pipe.set_progress_bar_config(disable=True)
            if self.offload:
                self._place()
        path = self.ic_lora
        self._ic_pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=IC_LORA_ADAPTER)
        self.reference_downscale_factor = read_reference_downscale_factor(path)
        self._lora_loaded = True

    def _reference_condition(self, reference: ReferenceInput, num_frames: int):
        from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

        sheet = reference.load()[0]
        frames = [sheet] * (num_frames if reference.loop else 1)  # a static video, as the IC-LoRA was trained
        return LTX2ReferenceCondition(frames=frames, strength=float(reference.strength))

    def _encode_prompt(self, req: GenerationRequest, cfg: bool) -> dict:
        from .gpu_memory import PromptCache

        tok = self.pipe.tokenizer
        limit = (getattr(tok, "model_max_length", 1024) or 1024) if tok is not None else 1024
        msl = self.max_sequence_length or int(min(1024, limit))
        key = PromptCache.key(req.prompt, req.negative_prompt or "", cfg, msl)
        cached = self.prompt_cache.get(key)
        if cached is not None:
            pe, pm, npe, npm = cached
            self._clock.prompt_cached = True
        elif self.prompt_encoder is not None:
            pe, pm, npe, npm = self.prompt_encoder(req, cfg, self.pipe._execution_device)
        else:
            pe, pm = self._encode_text(req.prompt, msl)
            npe, npm = self._encode_text(req.negative_prompt or "", msl) if cfg else (None, None)
        if cached is None:
            self.prompt_cache.put(key, (pe, pm, npe, npm))
        out = {"prompt_embeds": pe, "prompt_attention_mask": pm}
        if cfg:
            out.update(negative_prompt_embeds=npe, negative_prompt_attention_mask=npm)
        return out

    def _encode_text(self, text: str, max_len: int):
        """``(hidden states, attention mask)`` of one prompt: what ``LTX2ConditionPipeline.encode_prompt`` gives
        (Gemma 3's hidden states of every layer, stacked and flattened; the tokenizer padding on the left to
        ``max_len``), computed with less memory: without autograd (the pipeline's method keeps every layer's
        activations for a backward pass, ~10 GiB for Gemma 3 12B at 1,024 tokens, alive as long as the cached
        encoding), without a KV cache, and with the decoder alone (no LM head: its logits are 1,024 x 262,208)."""
        import torch

        from .gpu_memory import text_decoder

        pipe = self.pipe
        decoder = text_decoder(pipe.text_encoder)
        if decoder is None:  # not a Gemma-like encoder: the pipeline's own method, without autograd
            with torch.no_grad():
                pe, pm, _, _ = pipe.encode_prompt(prompt=text, do_classifier_free_guidance=False,
                                                  max_sequence_length=max_len, device=self.device)
            return pe, pm
        tok = pipe.tokenizer
        tok.padding_side = "left"  # as the pipeline: Gemma expects left padding
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        inputs = tok([text.strip()], padding="max_length", max_length=max_len, truncation=True,
                     add_special_tokens=True, return_tensors="pt")
        ids, mask = inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device)
        with torch.no_grad():
            out = decoder(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
            hidden = torch.stack(out.hidden_states, dim=-1).flatten(2, 3).to(pipe.text_encoder.dtype)
        del out
        return hidden, mask

    def _stage1_sigmas(self, req: GenerationRequest):
        if not self.preset.distilled_sigmas:
            return None
        from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

        sig = list(DISTILLED_SIGMA_VALUES)
        return sig if req.steps == len(sig) else None

    @contextmanager
    def _scheduler(self, fixed: bool):
        """With ``fixed``, the given sigmas are used as they are (no resolution-dependent shift)."""
        if not fixed:
            yield
            return
        from diffusers import FlowMatchEulerDiscreteScheduler

        base = self._base_scheduler
        self.pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            base.config, use_dynamic_shifting=False, shift_terminal=None)
        try:
            yield
        finally:
            self.pipe.scheduler = base

    def _upsample(self, latents):
        import torch

        up = self.upsampler
        if self.offload:
            up.to(self.device)
        try:
            with torch.no_grad():
                return up(latents.to(self.device, up.dtype))
        finally:
            if self.offload:
                up.to("cpu")

    def _step_callback(self, pipe, step, timestep, kwargs):
        if self.on_step is not None:
            self.on_step(int(step))
        return {}

    def _peak_gib(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated(self.device) / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    @contextmanager
    def _instrumented(self, clock: _Clock, pipe):
        """Time the pipeline's stages and serve cached condition latents, for the length of one call.

        Instance-level wrappers around ``pipe.preprocess_conditions``, ``vae.encode``, ``vae.decode`` and
        ``audio_vae.decode``, plus forward hooks on the transformer (denoising loop), the text connectors
        and the vocoder. All are removed on exit, failure included.

        The cache key of an encoded condition is the digest of that condition's own frames, the size and dtype
        they were preprocessed to, the CRF and the tiling: so a memory (preprocessed on its own, at its own size)
        is never served another condition's latents.
        """
        pending: dict = {}
        patched: list = []
        handles: list = []
        loop = {"first": None, "last": None}
        digests: dict = {}  # id(frames array) -> digest, for this call

        def digest_of(cond) -> Optional[str]:
            frames = getattr(cond, "frames", None)
            if not hasattr(frames, "tobytes") or not hasattr(frames, "shape"):
                return None  # not a uint8 array: left uncached
            key = id(frames)
            if key not in digests:
                digests[key] = ConditionInput.digest(frames)
            return digests[key]

        def patch(obj, name, make):
            had = name in vars(obj)
            old = vars(obj).get(name)
            setattr(obj, name, make(getattr(obj, name)))
            patched.append((obj, name, had, old))

        def timed(stage):
            def make(fn):
                def wrapper(*a, **k):
                    with clock.stage(stage):
                        return fn(*a, **k)
                return wrapper
            return make

        def preprocess(fn):
            # one condition at a time, so each surviving tensor is paired with its own frames' digest
            def wrapper(conditions=None, height=512, width=768, num_frames=121, device=None):
                out = ([], [], [], [])
                if conditions is not None and not isinstance(conditions, (list, tuple)):
                    conditions = [conditions]
                for cond in conditions or []:
                    got = fn([cond], height, width, num_frames, device=device)
                    for acc, vals in zip(out, got):
                        acc.extend(vals)
                    dg = digest_of(cond)
                    if got[0] and dg is not None:
                        t = got[0][0]
                        pending[id(t)] = (dg, tuple(t.shape), str(t.dtype), getattr(cond, "crf", None),
                                          self.vae_tiling)
                return out
            return wrapper

        def encode(fn):
            def wrapper(x, *a, **k):
                key = pending.get(id(x))
                if key is not None and self.cache_condition_latents and key in self._latent_cache:
                    self._latent_cache.move_to_end(key)
                    clock.cache_hits += 1
                    self.cache_hits += 1
                    return SimpleNamespace(latents=self._latent_cache[key].to(x.device))
                with clock.stage("vae_encode_s"):
                    out = fn(x, *a, **k)
                    if key is None or not self.cache_condition_latents:
                        return out
                    lat = out.latent_dist.mode()
                self._latent_cache[key] = lat.detach().to("cpu")
                while len(self._latent_cache) > self.cache_size:
                    self._latent_cache.popitem(last=False)
                return SimpleNamespace(latents=lat)
            return wrapper

        def module_timer(stage):
            state = {}

            def pre(mod, args, kwargs=None):
                state["t0"] = clock.now()
                state["prev"], clock.current = clock.current, stage

            def post(mod, args, output, kwargs=None):
                clock.t[stage] += clock.now() - state["t0"]
                clock.current = state["prev"]
            return pre, post

        def loop_pre(mod, args):
            if loop["first"] is None:
                loop["first"] = clock.mark()
            clock.current = "denoise"

        def loop_post(mod, args, output):
            loop["last"] = clock.mark()
            clock.current = "denoise"

        patch(pipe, "preprocess_conditions", preprocess)
        patch(pipe.vae, "encode", encode)
        patch(pipe.vae, "decode", timed("vae_decode_s"))
        patch(pipe.audio_vae, "decode", timed("audio_decode_s"))
        for module, stage in ((pipe.connectors, "text_encode_s"), (pipe.vocoder, "audio_decode_s")):
            pre, post = module_timer(stage)
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        handles.append(pipe.transformer.register_forward_pre_hook(loop_pre))
        handles.append(pipe.transformer.register_forward_hook(loop_post))

        def close_loop(part: Optional[str] = None):
            # the denoising loop: first transformer call to the last one's end, scheduler steps included
            if loop["first"] is not None and loop["last"] is not None:
                took = clock.between(loop["first"], loop["last"])
                clock.t["denoise_s"] += took
                if part or loop.get("parts"):
                    key = part or "denoise_stage2_s"
                    clock.t[key] += took
                    loop["parts"] = True
            loop["first"] = loop["last"] = None

        try:
            yield close_loop
        finally:
            close_loop()
            for h in handles:
                h.remove()
            for obj, name, had, old in reversed(patched):
                if had:
                    setattr(obj, name, old)
                else:
                    try:
                        delattr(obj, name)
                    except AttributeError:
                        pass
            pending.clear()


IC_LORA_ADAPTER = "ic_lora"


def resolve_ic_lora(spec: Union[str, os.PathLike], base_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The IC-LoRA file named by ``spec``: a ``.safetensors`` file, or a folder holding exactly one (relative paths
    against ``base_dir``). Raises ``ModelNotFound`` otherwise."""
    from ..encoders import ModelNotFound

    s = os.path.expanduser(str(spec))
    candidates = [s] if os.path.isabs(s) else ([os.path.join(str(base_dir), s)] if base_dir else []) + [s]
    for c in candidates:
        p = Path(c)
        if p.is_file() and p.suffix == ".safetensors":
            return p.resolve()
        if p.is_dir():
            files = sorted(p.glob("*.safetensors"))
            if len(files) == 1:
                return files[0].resolve()
            raise ModelNotFound("ic_lora", str(p), f"the folder holds {len(files)} .safetensors files, not one: "
                                "name the file")
    raise ModelNotFound("ic_lora", s, "no such .safetensors file or folder")


def read_reference_downscale_factor(lora_path: Union[str, os.PathLike]) -> int:
    """An IC-LoRA's ``reference_downscale_factor`` from its safetensors header (1 when absent).

    Lightricks keep it as a header entry of their IC-LoRAs (ltx-pipelines ``iclora_utils``, ComfyUI's IC-LoRA
    loader): the first key ending in ``reference_downscale_factor``, rounded, at least 1. diffusers does not read
    it, so the generator does.
    """
    from safetensors import safe_open

    with safe_open(str(lora_path), framework="pt") as f:
        meta = f.metadata() or {}
    for key, value in meta.items():
        if key.endswith("reference_downscale_factor"):
            try:
                return max(1, round(float(value)))
            except (TypeError, ValueError):
                return 1
    return 1


def load_upsampler(spec, model_source: str = "", base_dir=None, dtype=None):
    """An ``LTX2LatentUpsamplerModel`` from ``spec`` (see :meth:`LTX2Generator.from_pretrained`)."""
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from ..encoders import ModelNotFound, hub_offline, looks_like_hub_id, resolve_source

    if isinstance(spec, torch.nn.Module):
        return spec
    kw = {"dtype": dtype} if dtype is not None else {}
    if hub_offline():
        kw["local_files_only"] = True
    if spec is True or spec == "auto":
        source, sub = model_source, "latent_upsampler"
    else:
        source, sub = resolve_source(spec, base_dir), None
        if os.path.isdir(source) and not (Path(source) / "config.json").exists():
            if (Path(source) / "latent_upsampler" / "config.json").exists():
                sub = "latent_upsampler"
            else:
                raise ModelNotFound("upsampler", source, "the folder has neither config.json nor latent_upsampler/")
        elif not os.path.isdir(source) and not looks_like_hub_id(source):
            raise ModelNotFound("upsampler", source, "no such folder")
    if sub and os.path.isdir(source) and not (Path(source) / sub / "config.json").exists():
        raise ModelNotFound("upsampler", os.path.join(source, sub), "no latent upsampler in the model folder")
    try:
        if sub:
            return LTX2LatentUpsamplerModel.from_pretrained(source, subfolder=sub, **kw)
        return LTX2LatentUpsamplerModel.from_pretrained(source, **kw)
    except (OSError, ValueError) as exc:
        if os.path.isdir(source):
            raise
        raise ModelNotFound("upsampler", source, f"{type(exc).__name__}") from exc
