"""The contract between the engine and a video generator: a request in, frames, audio and timings out.

A generator is anything with ``generate(request) -> GenerationResult``. Conditions are pipeline-agnostic:
frames (uint8 HxWx3 arrays or image paths) placed at an output frame index with a strength in [0, 1];
each generator maps them onto its own mechanism (LTX-2: latent-index frame conditions).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from ...domain import with_generation_settings
from ...errors import StorygraphError


@dataclass
class ConditionInput:
    """Frames the output must follow, placed at output frame ``index``.

    ``frames``: one or more frames, each a uint8 HxWx3 array or an image path. Several frames are a video
    condition (e.g. the parent scene's last frames); one frame is a keyframe.
    ``index``: the output frame where the first condition frame lands; negative counts from the end (-1: last).
    ``strength``: 1.0 keeps the condition as given; lower values let the model depart from it.
    """

    frames: list
    index: int = 0
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.frames, (list, tuple)):
            self.frames = [self.frames]
        else:
            self.frames = list(self.frames)
        if not self.frames:
            raise ValueError("a condition needs at least one frame")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"condition strength must be in [0, 1], got {self.strength}")

    def load(self):
        """The frames as one uint8 array of shape (F, H, W, 3); paths are read from disk."""
        import numpy as np

        from ..arrays import rgb_frames

        arrays = rgb_frames(self.frames)
        h, w = arrays[0].shape[:2]
        if any(a.shape[:2] != (h, w) for a in arrays):
            raise ValueError("all frames of one condition must have the same size")
        return np.stack(arrays)

    @staticmethod
    def digest(frames) -> str:
        """A content fingerprint of loaded frames (F, H, W, 3): equal pixels, equal digest."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr(tuple(frames.shape)).encode())
        h.update(frames.tobytes())
        return h.hexdigest()


@dataclass
@with_generation_settings(before="conditions", optional=False)
class GenerationRequest:
    """The prompt, every generation setting of :class:`storygraph.domain.GenerationDefaults` (``width``,
    ``frames``, ``seed``, ... with their defaults) and the conditions."""

    prompt: str
    # one field per generation setting is inserted here
    conditions: list = field(default_factory=list)  # list[ConditionInput]

    def size(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"


@dataclass
class AudioTrack:
    samples: Any  # float32 array (channels, n) in [-1, 1]
    sample_rate: int


@dataclass
class GenerationResult:
    """What a generator made.

    ``frames``: uint8 (F, H, W, 3). ``timings``: seconds per stage (``denoise_s``, ``vae_encode_s``,
    ``vae_decode_s``, ``text_encode_s``, ``total_s`` and generator-specific extras). ``peak_gib``: peak GPU
    memory allocated during the call on CUDA; on the CPU, the process's peak resident set.
    ``attempts``: one line per out-of-memory retry saying what changed before the next try.
    ``width``/``height``/``num_frames``: the size actually generated (a retry may lower it).
    """

    frames: Any
    audio: Optional[AudioTrack] = None
    timings: dict = field(default_factory=dict)
    peak_gib: Optional[float] = None
    attempts: list = field(default_factory=list)
    width: int = 0
    height: int = 0
    num_frames: int = 0
    seed: int = 0
    settings: dict = field(default_factory=dict)  # what ran: preset, steps, guidance, offload, tiling, stages


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> GenerationResult: ...


class GenerationFailed(StorygraphError, RuntimeError):
    """Every retry ran out of memory (or the generator gave up); ``attempts`` says what was tried."""

    def __init__(self, message: str, attempts: Sequence[str] = ()):
        self.attempts = list(attempts)
        detail = "".join(f"\n  - {a}" for a in self.attempts)
        super().__init__(message + (f"\nattempts:{detail}" if detail else ""))
