"""Which LTX-2 checkpoint a diffusers folder holds (2.0, 2.3 or 2.5; distilled or dev), and its presets.

diffusers 0.42.1 runs every LTX-2 generation through the same pipeline classes; the generation is in the
configs. :func:`detect` reads JSON files only (``model_index.json`` and the components' ``config.json``), so
``storygraph models check`` names a checkpoint without loading a weight. The evidence, strongest first:

1. the text encoder: a Gemma 4 class (``Gemma4UnifiedForConditionalGeneration``, ``model_type``
   ``gemma4_unified``) is LTX-2.5 (diffusers' converter refuses any other for 2.5, and diffusers picks image
   CRF 18 by the same test);
2. a ``duration_head`` or a dedicated ``prompt_enhancer`` component: LTX-2.5;
3. the transformer: ``use_keyframes_abs_pos_embedding`` true or ``ff_bias`` false is 2.5; ``cross_attn_mod`` /
   ``gated_attn`` true or ``use_prompt_embeddings`` false is 2.3;
4. otherwise 2.0 (Gemma 3, no cross-attention modulation: the original layout).

The variant is ``distilled`` when the scheduler uses its sigmas as given (``use_dynamic_shifting`` false,
``shift_terminal`` null: how the converter writes distilled checkpoints), else ``dev``.

Presets follow Lightricks' pipeline constants (``ltx_pipelines/utils/constants.py``: ``LTX_2_PARAMS``,
``LTX_2_3_PARAMS``, ``LTX_2_4_PARAMS`` — "2.4" is the internal name of 2.5) and diffusers' LTX-2 docs:

=========  ==================================================================  =======  ======  ====  ===========
version    full (dev) model                                                    STG      CRF     steps cross-time
=========  ==================================================================  =======  ======  ====  ===========
2.0        CFG 3, STG 1, modality 3, rescale 0.7; audio CFG 7, STG 1, mod. 3    block 29  33      40    off
2.3        as 2.0                                                              block 28  33      30    on
2.5        as 2.3                                                              block 28  18      30    on
=========  ==================================================================  =======  ======  ====  ===========

``distilled`` (every version): the 8 distilled sigmas, guidance 1, no STG or modality guidance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

VERSIONS: tuple[str, ...] = ("2.0", "2.3", "2.5")
VARIANTS: tuple[str, ...] = ("distilled", "dev")
PRESET_NAMES: tuple[str, ...] = ("distilled", "full")

#: Image CRF of single-frame conditions (H.264 re-compression before encoding), per version.
IMAGE_CRF = {"2.0": 33, "2.3": 33, "2.5": 18}
#: The transformer block whose self-attention spatio-temporal guidance perturbs, per version.
STG_BLOCK = {"2.0": 29, "2.3": 28, "2.5": 28}


@dataclass(frozen=True)
class Preset:
    """Sampling settings. ``steps``/``guidance`` are the preset's recommended request values; ``call_kwargs`` go
    to the pipeline as they are; ``audio_guidance`` applies when the request asks for guidance (> 1)."""

    name: str
    steps: int
    guidance: float
    distilled_sigmas: bool  # stage 1 follows LTX-2's distilled sigma list (when steps match its length)
    stage2_steps: int = 3  # upsampler second stage, on the distilled stage-2 schedule
    call_kwargs: dict = field(default_factory=dict)
    version: str = "2.0"
    audio_guidance: float = 1.0
    image_crf: int = 33
    use_cross_timestep: bool = False

    def request(self, prompt: str, **kwargs):
        """A request carrying this preset's steps and guidance."""
        from .base import GenerationRequest

        kwargs.setdefault("steps", self.steps)
        kwargs.setdefault("guidance", self.guidance)
        return GenerationRequest(prompt=prompt, **kwargs)


#: What a distilled call passes to switch every extra guidance off (the pipeline's defaults are the full stack,
#: and its audio values fall back with ``or``: 0.0 would not switch them off).
NO_EXTRA_GUIDANCE = {"stg_scale": 0.0, "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0,
                     "guidance_rescale": 0.0, "audio_guidance_rescale": 0.0, "spatio_temporal_guidance_blocks": None}


def preset_for(version: str, name: str) -> Preset:
    """The ``distilled`` or ``full`` preset of an LTX-2 version."""
    if version not in VERSIONS:
        raise ValueError(f"LTX-2 version must be one of {', '.join(VERSIONS)}, got {version!r}")
    if name not in PRESET_NAMES:
        raise ValueError(f"preset must be one of {', '.join(PRESET_NAMES)}, got {name!r}")
    common = dict(version=version, image_crf=IMAGE_CRF[version], use_cross_timestep=version != "2.0")
    if name == "distilled":
        return Preset("distilled", steps=8, guidance=1.0, distilled_sigmas=True, call_kwargs=dict(NO_EXTRA_GUIDANCE),
                      audio_guidance=1.0, **common)
    full = {"stg_scale": 1.0, "modality_scale": 3.0, "guidance_rescale": 0.7, "audio_stg_scale": 1.0,
            "audio_modality_scale": 3.0, "audio_guidance_rescale": 0.7,
            "spatio_temporal_guidance_blocks": [STG_BLOCK[version]]}
    return Preset("full", steps=40 if version == "2.0" else 30, guidance=3.0, distilled_sigmas=False,
                  call_kwargs=full, audio_guidance=7.0, **common)


@dataclass(frozen=True)
class Checkpoint:
    """What a folder holds: ``version`` (2.0 / 2.3 / 2.5), ``variant`` (distilled / dev), and why."""

    version: str
    variant: str
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"LTX-{self.version} ({self.variant}): {'; '.join(self.reasons)}"


def _read_json(p: Path) -> dict:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def version_from_configs(index: dict, text_encoder: dict, transformer: dict) -> tuple[str, tuple[str, ...]]:
    """The version and the evidence, from ``model_index.json``, the text encoder's and the transformer's configs."""
    te_class = (index.get("text_encoder") or [None, None])[1] or ""
    te_type = text_encoder.get("model_type", "") or ""

    def has(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None

    reasons = []
    if str(te_class).startswith("Gemma4") or te_type in ("gemma4_unified", "gemma4"):
        reasons.append(f"text encoder {te_class or te_type} (Gemma 4)")
    if has("duration_head"):
        reasons.append("duration_head component")
    if has("prompt_enhancer"):
        reasons.append("dedicated prompt_enhancer component")
    if transformer.get("use_keyframes_abs_pos_embedding"):
        reasons.append("transformer use_keyframes_abs_pos_embedding=true")
    if transformer.get("ff_bias") is False:
        reasons.append("transformer ff_bias=false")
    if reasons:
        return "2.5", tuple(reasons)
    newer = [k for k in ("cross_attn_mod", "audio_cross_attn_mod", "gated_attn") if transformer.get(k)]
    if transformer.get("use_prompt_embeddings") is False:
        newer.append("use_prompt_embeddings=false")
    if newer:
        return "2.3", (f"transformer {', '.join(newer)}; text encoder {te_class or te_type or '?'}",)
    return "2.0", (f"transformer cross_attn_mod={transformer.get('cross_attn_mod', False)}; text encoder "
                   f"{te_class or te_type or '?'}",)


def variant_from_scheduler(scheduler: dict) -> str:
    if scheduler and not scheduler.get("use_dynamic_shifting", True) and scheduler.get("shift_terminal") is None:
        return "distilled"
    return "dev"


def detect(folder: Union[str, os.PathLike]) -> Checkpoint:
    """Name the LTX-2 checkpoint of a diffusers folder from its JSON files (see the module docstring).

    Raises ``ValueError`` when the folder has no ``model_index.json`` with a transformer entry.
    """
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    if "transformer" not in index:
        raise ValueError(f"{folder}: no model_index.json with a transformer component (not an LTX-2 diffusers folder)")
    version, reasons = version_from_configs(index, _read_json(folder / "text_encoder" / "config.json"),
                                            _read_json(folder / "transformer" / "config.json"))
    variant = variant_from_scheduler(_read_json(folder / "scheduler" / "scheduler_config.json"))
    return Checkpoint(version, variant, reasons)


def detect_pipe(pipe) -> Checkpoint:
    """The same, for a pipeline already in memory (its components' configs)."""
    def config(name: str) -> dict:
        comp = getattr(pipe, name, None)
        cfg = getattr(comp, "config", None)
        if cfg is None:
            return {}
        return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)

    index = {}
    for name in ("text_encoder", "duration_head", "prompt_enhancer", "transformer"):
        comp = getattr(pipe, name, None)
        index[name] = [None, None] if comp is None else [type(comp).__module__.split(".")[0], type(comp).__name__]
    version, reasons = version_from_configs(index, config("text_encoder"), config("transformer"))
    return Checkpoint(version, variant_from_scheduler(config("scheduler")), reasons)
