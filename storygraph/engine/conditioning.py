"""Which frames become which LTX-2 conditions for a scene, and why.

* continuous transition: the parent scene's last frames (several, default 9 = one 8-frame latent chunk
  plus the causal first frame) as a video condition at frame 0 — a true extension, not one still;
* cut / time skip: for each character, the top retrieved prior appearance (a ``Candidate`` from
  retrieval) as a single-frame keyframe condition at ``keyframe_index`` with a lower strength;
* explicit ``Reference``s in the scene spec add conditions with their own index and strength; a
  character (or costume) reference replaces that character's retrieved memory.

Placement follows LTX-2's latent grid (frame 0, then 1, 9, 17, ... for a temporal stride of 8). Frame 0
holds one condition only (it overwrites the first latent): a later claimant moves to the next slot, and
nothing but the extension is placed inside the extension's frames. Other slots may hold several
keyframes (they are appended as extra tokens at the same time position).

The plan returns the ``ConditionInput``s for the generator and one ``ConditionRecord`` per condition
(role, target, frame index, strength, retrieval score and a readable reason) for the ``CONDITIONED_ON``
provenance edges, plus notes on what was wanted but not possible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from ..domain import Candidate, ConditionRecord, SceneSpec, Transition
from .generators.base import ConditionInput


@dataclass(frozen=True)
class ConditioningParams:
    """Every knob of the conditioning plan, with its default.

    extension_frames: parent frames given to a continuous transition; rounded down to 8k+1 (9 = one
        latent chunk + the first frame, the smallest real extension).
    extension_strength: 1.0 keeps the parent's frames exactly (a seamless continuation).
    keyframe_index: output frame for retrieved appearances on a cut or time skip (0: the shot opens on it).
    keyframe_strength: strength of a retrieved appearance on a cut; lower leaves room for the new scene.
    time_skip_strength: the same after a time skip (people change over time); None: keyframe_strength.
    max_keyframes: at most this many retrieved appearances (the highest-scoring characters win).
    keyframes_on_continuous: also add retrieved appearances on a continuous transition (after the
        extension's frames); off by default since the extension already carries identity.
    look_strength: on a cut or time skip that gets no other condition (its characters have no memory yet and
        it names no reference), the parent's last frame at this low strength carries the look — grade,
        lighting, palette — across the cut without fixing its content; 0 turns it off.
    temporal_stride: the VAE's temporal compression (8 for LTX-2).
    """

    extension_frames: int = 9
    extension_strength: float = 1.0
    keyframe_index: int = 0
    keyframe_strength: float = 0.6
    time_skip_strength: Optional[float] = 0.5
    max_keyframes: int = 4
    keyframes_on_continuous: bool = False
    look_strength: float = 0.2
    temporal_stride: int = 8

    @classmethod
    def from_config(cls, section) -> "ConditioningParams":
        """Take the fields of this class that ``section`` (e.g. ``Config.engine``) has; keep the rest."""
        known = {f.name for f in fields(cls)}
        src = section if isinstance(section, Mapping) else {k: getattr(section, k) for k in known if hasattr(section, k)}
        return cls(**{k: v for k, v in src.items() if k in known})


@dataclass
class ConditioningPlan:
    conditions: list = field(default_factory=list)  # list[ConditionInput], aligned with records
    records: list = field(default_factory=list)  # list[ConditionRecord]
    notes: list = field(default_factory=list)  # what was wanted but not possible, in words

    def summary(self) -> str:
        lines = [r.reason for r in self.records] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines) if lines else "no conditions"


class _Slots:
    """Frame positions on the latent grid; frame 0 is exclusive, the extension reserves its frames."""

    def __init__(self, frames: int, stride: int):
        self.stride = max(1, int(stride))
        self.frames = max(1, int(frames))
        latents = (self.frames - 1) // self.stride + 1
        self.last = 0 if latents < 2 else (latents - 2) * self.stride + 1
        self.zero_taken = False
        self.reserved_until = 0  # first frame after the extension

    def snap(self, index: int) -> int:
        if index < 0:
            index = self.frames + index
        if index <= 0:
            return 0
        return ((index - 1) // self.stride) * self.stride + 1

    def take(self, wanted: int) -> Optional[int]:
        """The placed frame index for a condition wanted at ``wanted``, or None when none is free."""
        i = self.snap(wanted)
        if i < self.reserved_until:
            i = self.snap(self.reserved_until)
            if i < self.reserved_until:
                i += self.stride
        if i == 0 and self.zero_taken:
            i = 1
        if i > self.last:
            if self.last == 0 and self.zero_taken:
                return None
            i = self.last
            if i < self.reserved_until:
                return None
        if i == 0:
            self.zero_taken = True
        return i


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _strength(x: float) -> str:
    return f"{float(x):g}" if float(x) != 1.0 else "1.0"


def plan_conditioning(
    scene: SceneSpec,
    transition: Optional[Transition],
    memories: Mapping[str, Sequence[Candidate]],
    parent_last_frames: Optional[Sequence] = None,
    *,
    params: ConditioningParams = ConditioningParams(),
    frames: Optional[int] = None,
    names: Optional[Mapping[str, str]] = None,
    base_dir: Optional[Union[str, os.PathLike]] = None,
) -> ConditioningPlan:
    """Plan a scene's conditions.

    scene: the scene spec (its characters and references; ``frames`` if resolved).
    transition: the edge into the scene (None for an opening scene).
    memories: retrieved candidates per character id (best first or not: the highest score is used).
    parent_last_frames: the parent take's last frames (uint8 arrays or image paths, oldest first), used
        on a continuous transition.
    frames: output frame count (default ``scene.frames``, else 121). names: character id -> display name.
    base_dir: folder that relative reference paths are resolved against (the story file's folder).
    """
    names = dict(names or {})
    n_frames = int(frames or scene.frames or 121)
    slots = _Slots(n_frames, params.temporal_stride)
    plan = ConditioningPlan()
    kind = transition.kind if transition is not None else None

    def label(cid: str) -> str:
        return names.get(cid, cid)

    # 1. continuous: the parent's last frames at frame 0
    if kind == "continuous":
        available = list(parent_last_frames or [])
        if available:
            s = params.temporal_stride
            want = max(1, min(int(params.extension_frames), len(available)))
            k = (want - 1) // s * s + 1
            k = min(k, (n_frames - 1) // s * s + 1)
            used = available[-k:]
            slots.zero_taken = True
            slots.reserved_until = k
            plan.conditions.append(ConditionInput(list(used), 0, params.extension_strength))
            plan.records.append(ConditionRecord(
                role="extension", target_kind="Scene", target_id=transition.from_id, frame_index=0,
                strength=float(params.extension_strength), score=None,
                reason=(f"continuous from {transition.from_id}: its last {k} frame{'s' if k != 1 else ''} "
                        f"at index 0, strength {_strength(params.extension_strength)}"),
            ))
        else:
            plan.notes.append(f"continuous from {transition.from_id}, but its last frames are missing: "
                              "no extension")

    # 2. explicit references (they win over retrieved memory of their character)
    referenced: dict = {}
    for ref in scene.references:
        path = ref.path
        full = str(resolve_reference_path(path, base_dir))
        asked = slots.snap(ref.frame_index)
        reserved = slots.reserved_until
        at = slots.take(ref.frame_index)
        if at is None:
            plan.notes.append(f"reference {path}: no free frame position left")
            continue
        who = f" of {label(ref.character)}" if ref.character else ""
        moved = ""
        if at != asked:
            if asked < reserved:
                moved = f" (asked for index {ref.frame_index}; the extension holds frames 0-{reserved - 1})"
            elif asked == 0:
                moved = f" (asked for index {ref.frame_index}; frame 0 was taken)"
            else:
                moved = f" (asked for index {ref.frame_index}; the last keyframe position is {at})"
        replaces = ""
        if ref.character and ref.kind in ("character", "costume"):
            referenced[ref.character] = path
            if memories.get(ref.character):
                replaces = f"; replaces {label(ref.character)}'s retrieved memory"
        plan.conditions.append(ConditionInput([full], at, float(ref.strength)))
        plan.records.append(ConditionRecord(
            role="reference", target_kind="Reference", target_id=path, frame_index=at,
            strength=float(ref.strength), score=None,
            reason=(f"reference ({ref.kind}{who}): {path} at index {at}, strength {_strength(ref.strength)}"
                    f"{moved}{replaces}"),
        ))

    # 3. retrieved memory as keyframes on a cut / time skip (or everywhere but continuous, by default)
    use_memory = kind != "continuous" or params.keyframes_on_continuous
    if use_memory:
        if kind == "time_skip":
            gap = transition.effective_gap
            why = f"time skip (gap {gap:g})"
            strength = params.time_skip_strength if params.time_skip_strength is not None else params.keyframe_strength
        elif kind == "cut":
            why, strength = "cut", params.keyframe_strength
        elif kind == "continuous":
            why, strength = f"continuous from {transition.from_id}", params.keyframe_strength
        else:
            why, strength = "opening scene", params.keyframe_strength
        tops = []
        for cid in scene.characters:
            if cid in referenced:
                continue
            cands = [c for c in (memories.get(cid) or []) if getattr(c.appearance, "frame_path", None)]
            if not cands:
                if kind is not None:
                    plan.notes.append(f"{why}: no prior appearance of {label(cid)} on this timeline")
                continue
            tops.append((cid, max(cands, key=lambda c: c.score)))
        tops.sort(key=lambda t: -t[1].score)
        for rank, (cid, cand) in enumerate(tops):
            if rank >= params.max_keyframes:
                plan.notes.append(f"{why}: {label(cid)}'s memory left out (max_keyframes={params.max_keyframes})")
                continue
            at = slots.take(params.keyframe_index)
            if at is None:
                plan.notes.append(f"{why}: no free frame position for {label(cid)}'s memory")
                continue
            a = cand.appearance
            plan.conditions.append(ConditionInput([a.frame_path], at, float(strength)))
            plan.records.append(ConditionRecord(
                role="keyframe", target_kind="Appearance", target_id=a.id, frame_index=at,
                strength=float(strength), score=float(cand.score),
                reason=(f"{why}: {label(cid)}'s nearest prior appearance (scene {a.scene_id}, score "
                        f"{_fmt(cand.score)}: relevance {_fmt(cand.relevance)}, retention {_fmt(cand.retention)}, "
                        f"quality {_fmt(cand.quality)}) at index {at}, strength {_strength(strength)}"),
            ))

    # 4. nothing else to go on across a cut: the parent's look, weakly
    if (kind in ("cut", "time_skip") and not plan.conditions and params.look_strength > 0
            and parent_last_frames):
        at = slots.take(0)
        if at is not None:
            plan.conditions.append(ConditionInput([list(parent_last_frames)[-1]], at, float(params.look_strength)))
            plan.records.append(ConditionRecord(
                role="look", target_kind="Scene", target_id=transition.from_id, frame_index=at,
                strength=float(params.look_strength), score=None,
                reason=(f"{kind.replace('_', ' ')} from {transition.from_id} with no character memory or reference: "
                        f"its last frame at index {at}, strength {_strength(params.look_strength)}, "
                        "to carry the look (grade, light) across the cut"),
            ))
    return plan


def resolve_reference_path(path: str, base_dir: Optional[Union[str, os.PathLike]]) -> Path:
    """A reference path as the plan reads it: absolute, or relative to ``base_dir``."""
    return Path(path) if os.path.isabs(path) or base_dir is None else Path(base_dir) / path
