"""Video generators behind one protocol (``base.Generator``); LTX-2 through diffusers is the one shipped.

Importing this package is cheap: torch and diffusers load when a generator is built.
"""

from .base import (
    AudioTrack,
    ConditionInput,
    GenerationFailed,
    GenerationRequest,
    GenerationResult,
    Generator,
    MemoryInput,
    ReferenceInput,
)
from .ltx2 import LTX2Generator, load_upsampler, read_reference_downscale_factor, resolve_ic_lora
from .versions import VERSIONS, Checkpoint, Preset, detect, preset_for

__all__ = [
    "AudioTrack",
    "Checkpoint",
    "ConditionInput",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "LTX2Generator",
    "MemoryInput",
    "Preset",
    "ReferenceInput",
    "VERSIONS",
    "detect",
    "load_upsampler",
    "preset_for",
    "read_reference_downscale_factor",
    "resolve_ic_lora",
]
