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
)
from .ltx2 import PRESETS, LTX2Generator, Preset, load_upsampler

__all__ = [
    "AudioTrack",
    "ConditionInput",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "LTX2Generator",
    "PRESETS",
    "Preset",
    "load_upsampler",
]
