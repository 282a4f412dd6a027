"""The two array chores every stage shares, done one way: unit vectors and uint8 RGB frames.

``l2_normalize`` is the only vector normaliser (scores, retrieval and the vector indexes all use it);
``to_uint8`` the only pixel converter, and ``rgb_frames`` the only reader of "some frames" in whatever form they
come (arrays, tensors, PIL images, image paths). Float pixels are in [0, 1] everywhere.
"""

from __future__ import annotations

import os

import numpy as np


def l2_normalize(x, dtype=np.float32) -> np.ndarray:
    """``x`` with every row (the last axis) scaled to unit length, as a contiguous array of ``dtype``; a zero row
    stays zero."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=dtype)


def to_uint8(a) -> np.ndarray:
    """Pixels as uint8, shape kept: floats are in [0, 1] (scaled by 255, rounded, clipped); integers are clipped
    to 0..255."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        a = np.rint(a * 255.0)
    return np.clip(a, 0, 255).astype(np.uint8)


def rgb_frames(frames) -> list[np.ndarray]:
    """Frames as a list of contiguous (H, W, 3) uint8 arrays.

    Accepts an array (N, H, W, C) or (H, W, C) or (H, W) of uint8 or floats in [0, 1], a torch tensor of
    either, a PIL image, a path to an image file, or a list of any of these. Grey becomes RGB; alpha is dropped.
    """
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        return [_rgb(f) for f in to_uint8(frames)]
    if isinstance(frames, (np.ndarray, str, os.PathLike)) or hasattr(frames, "convert"):
        frames = [frames]
    return [_one(f) for f in frames]


def _one(img) -> np.ndarray:
    if isinstance(img, (str, os.PathLike)):
        from PIL import Image

        with Image.open(img) as im:
            return np.asarray(im.convert("RGB")).copy()
    if hasattr(img, "convert"):  # PIL image
        return np.asarray(img.convert("RGB"))
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else img
    return _rgb(to_uint8(a))


def _rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {a.shape}")
    return np.ascontiguousarray(a[..., :3])
