"""Reference images added from outside a story file (the studio's uploads): checked, normalised and kept in the
story folder, and attached to a character, a place or a scene.

An upload is accepted only when Pillow reads it as a PNG, JPEG, WebP or GIF of at most ``MAX_SIDE`` pixels a side
(the file's own bytes decide, never its name); it is written again as an RGB PNG under
``<story dir>/media/references/<digest>.png``, named by the digest of its pixels, so replacing a reference adds a
new file and never changes the pixels an earlier take was made from. Files live under ``media/`` so the viewer can
show them.

Attaching: a character's reference (its identity anchor for retrieval and scoring), a place's reference, or a
scene reference of kind ``character``, ``costume`` or ``place`` that conditions the scene (replacing the scene's
reference of the same kind for the same character).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_SIDE = 4096
MAX_BYTES = 16 << 20
REFERENCES_DIR = ("media", "references")
SCENE_KINDS = ("character", "costume", "place")


class ReferenceImageError(InvalidInput):
    """An upload that is not an image this story takes."""


def reference_root(store, story_dir) -> str:
    """The folder relative reference image paths resolve against: the story file's, else the story folder."""
    meta = store.story_meta() or {}
    src = meta.get("source_path")
    return str(Path(src).parent) if src else str(story_dir)


def references_dir(story_dir) -> Path:
    return Path(story_dir).joinpath(*REFERENCES_DIR)


def save_reference_image(story_dir, data: bytes) -> Path:
    """Check ``data`` is an image (see the module docstring) and keep it as a PNG; returns its path."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ReferenceImageError("the image is empty")
    if len(data) > MAX_BYTES:
        raise ReferenceImageError(f"the image is larger than {MAX_BYTES >> 20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            size = probe.size
            if fmt not in FORMATS:
                raise ReferenceImageError(f"{fmt or 'unknown'} images are not taken: send PNG, JPEG, WebP or GIF")
            if max(size) > MAX_SIDE or min(size) < 1:
                raise ReferenceImageError(f"the image is {size[0]}x{size[1]}: at most {MAX_SIDE} pixels a side")
            probe.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            rgb = im.convert("RGB")
    except ReferenceImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ReferenceImageError(f"not an image this story takes ({type(e).__name__}): send PNG, JPEG, WebP or GIF"
                                  ) from None
    digest = hashlib.sha256(rgb.tobytes() + repr(rgb.size).encode()).hexdigest()[:20]
    folder = references_dir(story_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.png"
    if not path.exists():
        tmp = path.with_suffix(".part")
        rgb.save(tmp, format="PNG")
        tmp.replace(path)
    return path


def is_uploaded(story_dir, path: Optional[str]) -> bool:
    """Whether ``path`` is an image kept by :func:`save_reference_image` in this story folder."""
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(references_dir(story_dir).resolve())
    except (ValueError, OSError):
        return False
    return True
