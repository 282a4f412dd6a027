"""The observer: a generated clip in, scores and per-character Appearance records out.

Sampling. ``observed_frame_indices(n, k)`` takes the first frame, the last frame and ``k`` frames spread
uniformly between them (``np.linspace(0, n - 1, k + 2)`` rounded); the default ``k`` is
:data:`DEFAULT_SAMPLES` = 8 (the ``[engine] observe_frames`` key), so a 121-frame clip is observed on
frames 0, 13, 27, 40, ..., 107, 120. The sampled frames are embedded once with CLIP and once with DINOv2 (the
parent's last frame and any reference images not yet cached ride in the same DINOv2 batch).

Scores (``storygraph.domain.Scores``), all cosines of L2-normalised embeddings:

- ``text_alignment``: mean over sampled frames of cos(CLIP text(prompt), CLIP image(frame)).
- ``subject_consistency`` (VBench, DINOv2 features) and ``background_consistency`` (VBench, CLIP image
  features): mean over frames i >= 1 of ½·[max(0, cos(f(i-1), f(i))) + max(0, cos(f(0), f(i)))].
  VBench runs it on every frame; here it runs on the sampled frames. One frame: undefined (None).
- ``transition_smoothness``: cos(DINOv2(parent's last frame), DINOv2(this clip's first frame)); None
  without a parent frame.
- ``identity`` / ``identity_by_character``: see below; ``identity`` is the mean over the scene's characters.

Identity of a character, per sampled frame i (DINOv2):

- the *anchor* is the character's reference image; with no reference, its first accepted prior
  appearance (smallest clock, then position, then take) — the same fallback as the drift guard;
- ``anchor_sim(i) = cos(f(i), anchor)``; ``prior_sim(i)`` = mean of cos(f(i), p) over the accepted prior
  appearances given; ``identity(i)`` is the mean of whichever of the two exist;
- with neither a reference nor a prior appearance (a character's first scene), identity is the clip's
  self-consistency: ``identity(i)`` = mean of cos(f(i), f(j)) over the other sampled frames j (1.0 for a
  single frame).

Representative frame and Appearance. Nothing localises characters inside a frame (no detector), so
all embeddings are of whole frames and a character's representative frame is the sampled frame with the
highest ``identity(i)`` (earliest on ties). Its index, CLIP and DINOv2 embeddings and ``identity(i)``
make the Appearance; its initial strength is ``memory.initial_strength``: ``strength_init · identity``
clipped to ``[strength_min, strength_max]`` (``MemoryParams``). Each representative frame is written once as a PNG
into the media folder given to :meth:`Observer.observe`.

The formula functions here are pure numpy and take plain arrays.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..domain import Appearance, Character, MemoryParams, Scores
from .arrays import l2_normalize, rgb_frames
from .memory import initial_strength  # strength_init · identity, clipped: the memory maths owns it

F64 = np.float64  # scores are computed in double precision

#: Uniform samples besides the first and last frame (``[engine] observe_frames``).
DEFAULT_SAMPLES = 8


# --------------------------------------------------------------------------------------------------
# Pure formulas


def observed_frame_indices(n_frames: int, k: int = DEFAULT_SAMPLES) -> list[int]:
    """First, last and ``k`` uniform frame indices of an ``n_frames`` clip, sorted and unique."""
    if n_frames <= 0:
        raise ValueError("a clip needs at least one frame")
    if n_frames == 1:
        return [0]
    idx = np.rint(np.linspace(0, n_frames - 1, max(int(k), 0) + 2)).astype(int)
    return sorted(set(int(i) for i in idx))


def vbench_consistency(features: np.ndarray) -> Optional[float]:
    """VBench's subject/background consistency of per-frame features (N, D); None for N < 2."""
    f = l2_normalize(features, F64)
    if f.ndim != 2 or f.shape[0] < 2:
        return None
    prev = np.maximum(0.0, np.sum(f[:-1] * f[1:], axis=1))
    first = np.maximum(0.0, f[1:] @ f[0])
    return float(np.mean(0.5 * (prev + first)))


def subject_consistency(dino: np.ndarray) -> Optional[float]:
    return vbench_consistency(dino)


def background_consistency(clip: np.ndarray) -> Optional[float]:
    return vbench_consistency(clip)


def text_alignment(text: np.ndarray, clip_frames: np.ndarray) -> float:
    """Mean cosine of one CLIP text embedding (D,) against CLIP image embeddings (N, D)."""
    return float(np.mean(l2_normalize(clip_frames, F64) @ l2_normalize(np.ravel(text), F64)))


def transition_smoothness(parent_last: np.ndarray, first: np.ndarray) -> float:
    """DINOv2 cosine of the parent's last frame to this clip's first frame."""
    return float(l2_normalize(np.ravel(parent_last), F64) @ l2_normalize(np.ravel(first), F64))


def first_accepted(prior: Sequence[Appearance]) -> Optional[Appearance]:
    """The earliest accepted appearance in story time (clock, then position, then take)."""
    accepted = [a for a in prior if a.accepted and a.dino is not None and len(a.dino)]
    return min(accepted, key=lambda a: (a.clock, a.pos, a.take)) if accepted else None


def frame_identity(dino_frames: np.ndarray, anchor: Optional[np.ndarray] = None,
                   prior: Optional[np.ndarray] = None) -> tuple[np.ndarray, str]:
    """Per-frame identity (N,) and its basis: "anchor", "prior", "anchor+prior" or "self".

    ``anchor``: (D,) embedding of the reference (or first accepted appearance); ``prior``: (M, D)
    embeddings of prior appearances.
    """
    f = l2_normalize(dino_frames, F64)
    terms, basis = [], []
    if anchor is not None:
        terms.append(f @ l2_normalize(np.ravel(anchor), F64))
        basis.append("anchor")
    if prior is not None and len(prior):
        terms.append((f @ l2_normalize(np.atleast_2d(prior), F64).T).mean(axis=1))
        basis.append("prior")
    if terms:
        return np.mean(terms, axis=0), "+".join(basis)
    n = f.shape[0]
    if n == 1:
        return np.ones(1), "self"
    sims = f @ f.T
    return (sims.sum(axis=1) - np.diag(sims)) / (n - 1), "self"


def representative_frame(identity: np.ndarray) -> int:
    """Position of the best identity (the first one on ties)."""
    return int(np.argmax(identity))


def appearance_id(scene_id: str, take: int, character_id: str) -> str:
    return f"{scene_id}:t{int(take)}:{character_id}"


# --------------------------------------------------------------------------------------------------
# The observer


@dataclass
class CharacterMemory:
    """What the observer needs about one character of the scene.

    ``reference``: an image (array, PIL image, path) or a DINOv2 embedding (1-D float array); None:
    the character's ``reference_path``, if any. ``prior``: the character's earlier appearances on this
    timeline (only accepted ones count).
    """

    character: Character
    reference: object = None
    prior: Sequence[Appearance] = ()


@dataclass
class Observation:
    scores: Scores
    appearances: list[Appearance]
    frame_indices: list[int]
    clip: np.ndarray  # (n_sampled, clip_dim)
    dino: np.ndarray  # (n_sampled, dino_dim)
    text: Optional[np.ndarray]  # (clip_dim,) or None without a prompt
    identity_basis: dict = field(default_factory=dict)  # character id -> "anchor" | "prior" | ... | "self"
    anchor_source: dict = field(default_factory=dict)  # character id -> "reference" | "first_appearance" | None
    timings_ms: dict = field(default_factory=dict)


def _is_embedding(x) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind == "f"


class Observer:
    """Scores clips with an :class:`~storygraph.engine.encoders.Encoders` and makes Appearance records."""

    def __init__(self, encoders, samples: int = DEFAULT_SAMPLES, params: MemoryParams = MemoryParams(),
                 reference_root: Optional[Union[str, os.PathLike]] = None, png_compress_level: int = 1):
        self.encoders = encoders
        self.samples = int(samples)
        self.params = params
        self.reference_root = reference_root
        self.png_compress_level = int(png_compress_level)
        self._reference_cache: dict[str, np.ndarray] = {}

    def _reference_path(self, path: str) -> str:
        if self.reference_root and not os.path.isabs(path):
            return os.path.join(str(self.reference_root), path)
        return path

    def observe(self, frames, *, scene_id: str, prompt: str = "",
                characters: Sequence[Union[CharacterMemory, Character]] = (),
                parent_last_frame=None, media_dir: Optional[Union[str, os.PathLike]] = None,
                clock: float = 0.0, branch: str = "", pos: int = 0, take: int = 0) -> Observation:
        """Observe one clip.

        ``frames``: uint8 (F, H, W, 3) array, float array in [0, 1], or a list of images.
        ``parent_last_frame``: image or DINOv2 embedding of the parent scene's last frame (continuous or
        not); None for a first scene. ``media_dir``: where representative frames are written as PNG
        (None: nothing is written and ``frame_path`` stays empty).
        """
        t0 = time.perf_counter()
        n = len(frames)
        idx = observed_frame_indices(n, self.samples)
        if isinstance(frames, np.ndarray) or hasattr(frames, "detach"):
            sampled = frames[idx]
        else:
            sampled = [frames[i] for i in idx]
        sampled = rgb_frames(sampled)
        mems = [c if isinstance(c, CharacterMemory) else CharacterMemory(c) for c in characters]

        # Extra DINOv2 inputs batched with the frames: parent's last frame, uncached references.
        extra: list = []
        parent_emb = None
        if parent_last_frame is not None:
            if _is_embedding(parent_last_frame):
                parent_emb = parent_last_frame
            else:
                extra.append(("parent", None, parent_last_frame))
        anchors: dict[str, Optional[np.ndarray]] = {}
        anchor_src: dict[str, Optional[str]] = {}
        for m in mems:
            cid = m.character.id
            ref = m.reference if m.reference is not None else m.character.reference_path
            if ref is None:
                continue
            anchor_src[cid] = "reference"
            if _is_embedding(ref):
                anchors[cid] = ref
            elif isinstance(ref, (str, os.PathLike)):
                key = os.path.abspath(self._reference_path(str(ref)))
                if key in self._reference_cache:
                    anchors[cid] = self._reference_cache[key]
                else:
                    extra.append(("ref", cid, key))
            else:
                extra.append(("ref", cid, ref))
        t1 = time.perf_counter()

        extra_imgs = [rgb_frames(x[2])[0] for x in extra]
        clip = self.encoders.embed_clip_images(sampled)
        dino_all = self.encoders.embed_dino_images(sampled + extra_imgs)
        dino = dino_all[: len(sampled)]
        text = self.encoders.embed_text([prompt])[0] if prompt else None
        for (kind, cid, src), emb in zip(extra, dino_all[len(sampled):]):
            if kind == "parent":
                parent_emb = emb
            else:
                anchors[cid] = emb
                if isinstance(src, str):
                    self._reference_cache[src] = emb
        t2 = time.perf_counter()

        appearances: list[Appearance] = []
        identity_by: dict[str, float] = {}
        basis_by: dict[str, str] = {}
        chosen: dict[int, list[str]] = {}
        for m in mems:
            cid = m.character.id
            prior = [a for a in m.prior if a.accepted and a.dino is not None and len(a.dino)]
            anchor = anchors.get(cid)
            if anchor is None:
                first = first_accepted(prior)
                if first is not None:
                    anchor = np.asarray(first.dino, dtype=np.float64)
                    anchor_src[cid] = "first_appearance"
                else:
                    anchor_src[cid] = None
            prior_mat = np.asarray([a.dino for a in prior], dtype=np.float64) if prior else None
            ident, basis = frame_identity(dino, anchor, prior_mat)
            r = representative_frame(ident)
            score = float(ident[r])
            identity_by[cid] = score
            basis_by[cid] = basis
            chosen.setdefault(r, []).append(cid)
            appearances.append(Appearance(
                id=appearance_id(scene_id, take, cid), character_id=cid, scene_id=scene_id,
                frame_index=idx[r], frame_path="", strength=initial_strength(score, self.params),
                reinforced_clock=float(clock), identity_score=score,
                clip=[float(v) for v in clip[r]], dino=[float(v) for v in dino[r]],
                clock=float(clock), branch=branch, pos=int(pos), take=int(take), accepted=True))
        t3 = time.perf_counter()

        if media_dir is not None and chosen:
            paths = self._write_frames(media_dir, {r: sampled[r] for r in chosen}, idx)
            for a in appearances:
                a.frame_path = paths[idx.index(a.frame_index)]
        t4 = time.perf_counter()

        scores = Scores(
            text_alignment=text_alignment(text, clip) if text is not None else None,
            subject_consistency=subject_consistency(dino),
            background_consistency=background_consistency(clip),
            identity=float(np.mean(list(identity_by.values()))) if identity_by else None,
            transition_smoothness=transition_smoothness(parent_emb, dino[0]) if parent_emb is not None else None,
            identity_by_character=identity_by,
        )
        ms = lambda a, b: round((b - a) * 1000.0, 3)  # noqa: E731
        return Observation(
            scores=scores, appearances=appearances, frame_indices=idx, clip=clip, dino=dino, text=text,
            identity_basis=basis_by, anchor_source=anchor_src,
            timings_ms={"prepare": ms(t0, t1), "embed": ms(t1, t2), "score": ms(t2, t3) + ms(t4, time.perf_counter()),
                        "write": ms(t3, t4), "total": ms(t0, time.perf_counter())})

    def _write_frames(self, media_dir, frames_by_pos: dict, idx: list[int]) -> dict[int, str]:
        from .media import save_image

        folder = Path(media_dir)
        folder.mkdir(parents=True, exist_ok=True)
        out = {r: str(folder / f"frame_{idx[r]:04d}.png") for r in frames_by_pos}

        def write(r):
            save_image(out[r], frames_by_pos[r], compress_level=self.png_compress_level)

        if len(out) == 1:
            write(next(iter(out)))
        else:  # PNG encoding releases the GIL: one thread per frame
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(out), 8)) as pool:
                list(pool.map(write, out))
        return out
