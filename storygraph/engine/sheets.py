"""Reference sheets: one composite image of a scene's remembered characters and place, for an IC-LoRA.

LTX-2.3's "Ingredients" IC-LoRA takes a single composite image that inventories the characters, props and
location of a scene, at the output resolution, looped as a static video; its prompts open with a "Reference
Sheet Description" naming each cell by row, column and kind ("Top Row Left (Setting): ..."). This module lays
the cells out (:func:`layout`, pure: the planner names cells without touching an image), paints the sheet
(:func:`compose`: each cell letterboxed, a character's several views side by side in its cell) and writes the
description (:func:`describe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Panel:
    """One cell: ``kind`` setting | character | prop, a ``label`` for the description, and its images (paths or
    uint8 HxWx3 arrays; several views of one character share the cell)."""

    kind: str
    label: str
    images: tuple = ()


@dataclass
class SheetPlan:
    """The panels of a scene's sheet, how strongly it conditions, and whether it is looped over the clip."""

    panels: list = field(default_factory=list)  # list[Panel]
    strength: float = 1.0
    loop: bool = True


def grid(n: int, width: int, height: int) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` cells on a ``width`` x ``height`` sheet: cells close to the sheet's aspect."""
    n = max(1, int(n))
    cols = max(1, min(n, math.ceil(math.sqrt(n * width / max(1, height)))))
    return math.ceil(n / cols), cols


def _name(i: int, n: int, names: tuple) -> str:
    if n == 1:
        return names[0]
    if n == 2:
        return (names[0], names[-1])[i]
    if n == 3:
        return names[i]
    return names[0] if i == 0 else names[-1] if i == n - 1 else f"{names[1]} {i + 1}"


def layout(n: int, width: int, height: int) -> list[str]:
    """The position name of each of ``n`` cells, in fill order (left to right, top to bottom)."""
    rows, cols = grid(n, width, height)
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        row = _name(r, rows, ("Top", "Middle", "Bottom"))
        col = _name(c, cols, ("Left", "Middle", "Right"))
        out.append(f"{row} Row" if cols == 1 else f"{row} Row {col}" if rows > 1 else col)
    return out


def describe(panels: Sequence[Panel], width: int, height: int) -> str:
    """The prompt preamble naming every cell by position and kind."""
    parts = [f"{pos} ({p.kind.capitalize()}): {p.label.strip().rstrip('.')}."
             for pos, p in zip(layout(len(panels), width, height), panels)]
    return "Reference Sheet Description. " + " ".join(parts)


def compose(panels: Sequence[Panel], width: int, height: int, background=(255, 255, 255)):
    """The sheet as a uint8 (height, width, 3) array: a grid of cells, each image letterboxed into its cell."""
    import numpy as np
    from PIL import Image

    from .arrays import rgb_frames

    rows, cols = grid(len(panels), width, height)
    sheet = Image.new("RGB", (width, height), background)
    cw, ch = width // cols, height // rows
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        views = rgb_frames(list(panel.images)) if panel.images else []
        if not views:
            continue
        vw = cw // len(views)  # several views of one character side by side
        for j, arr in enumerate(views):
            im = Image.fromarray(np.asarray(arr, dtype=np.uint8)).convert("RGB")
            scale = min(vw / im.width, ch / im.height)
            im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.BILINEAR)
            sheet.paste(im, (c * cw + j * vw + (vw - im.width) // 2, r * ch + (ch - im.height) // 2))
    return np.asarray(sheet, dtype=np.uint8)
