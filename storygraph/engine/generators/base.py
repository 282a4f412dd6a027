"""The contract between the engine and a video generator: a request in, frames, audio and timings out.

A generator is anything with ``generate(request) -> GenerationResult``. Inputs are pipeline-agnostic frames
(uint8 HxWx3 arrays or image paths) with a strength in [0, 1], in three kinds, one per way memory reaches a
model:

* :class:`ConditionInput` — frames placed in the clip's timeline at an output frame index (the extension of a
  continuous transition at 0, keyframes later);
* :class:`MemoryInput` — context memory: frames placed *before* the clip, ``before`` latent slots back, that the
  model attends to but never shows;
* :class:`ReferenceInput` — an IC-LoRA reference (one composite sheet), on a request's ``reference``.

Each generator maps them onto its own mechanism (LTX-2: latent-index conditions, tokens at negative time, and an
in-context reference with the LoRA loaded).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from ...domain import with_generation_settings
from ...errors import StorygraphError


def fitting_downscale(height: int, width: int, wanted: int, multiple: int) -> int:
    """The largest d <= ``wanted`` that keeps (height / d, width / d) whole multiples of ``multiple`` (the model's
    spatial grid); 1 when none does."""
    for d in range(max(1, int(wanted)), 1, -1):
        if height % (d * multiple) == 0 and width % (d * multiple) == 0:
            return d
    return 1


class _Frames:
    """Frames given as uint8 HxWx3 arrays or image paths, with a strength in [0, 1]."""

    frames: list
    strength: float

    def _check_frames(self, what: str) -> None:
        if not isinstance(self.frames, (list, tuple)):
            self.frames = [self.frames]
        else:
            self.frames = list(self.frames)
        if not self.frames:
            raise ValueError(f"a {what} needs at least one frame")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"{what} strength must be in [0, 1], got {self.strength}")

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
class ConditionInput(_Frames):
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
        self._check_frames("condition")


@dataclass
class MemoryInput(_Frames):
    """Context memory: frames the model sees *before* the clip, never part of the output.

    ``before``: how many latent slots (8 frames each for LTX-2) before frame 0 it sits: slot k is pixel time
    ``-8k``. Memories of one request take distinct slots. ``strength``: 1.0 keeps it clean (the intended use).
    ``downscale``: encode it at 1/d of the output's width and height (d² fewer tokens; it still spans the frame).
    """

    frames: list
    before: int = 1
    strength: float = 1.0
    downscale: int = 1

    def __post_init__(self) -> None:
        self._check_frames("memory")
        if int(self.before) < 1:
            raise ValueError(f"a memory sits at least one slot before the clip (before >= 1), got {self.before}")
        if int(self.downscale) < 1:
            raise ValueError(f"memory downscale must be >= 1, got {self.downscale}")


@dataclass
class ReferenceInput(_Frames):
    """An IC-LoRA reference: one image (a composite sheet) the model reads through the configured IC-LoRA.

    ``loop``: give it as a static video the clip's length (how LTX-2.3's Ingredients IC-LoRA was trained);
    otherwise as one frame (far fewer tokens). ``description``: what the sheet shows, cell by cell (the engine
    prepends it to the prompt).
    """

    frames: list
    strength: float = 1.0
    loop: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        self._check_frames("reference")


@dataclass
@with_generation_settings(before="conditions", optional=False)
class GenerationRequest:
    """The prompt, every generation setting of :class:`storygraph.domain.GenerationDefaults` (``width``,
    ``frames``, ``seed``, ... with their defaults) and the conditions."""

    prompt: str
    # one field per generation setting is inserted here
    conditions: list = field(default_factory=list)  # ConditionInput (in the clip) and MemoryInput (before it)
    reference: Optional[ReferenceInput] = None  # an IC-LoRA reference sheet; needs a generator with an IC-LoRA

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
