"""Which memory becomes which LTX-2 condition for a scene, how it reaches the model, and why.

Memory reaches the model in one of four modes (``storygraph.domain.MEMORY_MODES``), chosen per transition kind in
``storygraph.toml`` (``[engine] memory_continuous / memory_cut / memory_time_skip``; ``auto`` is ``reference``
when an IC-LoRA is configured, else ``context``; an opening scene follows ``memory_cut``), overridable per scene
(the story file's ``memory:``):

* ``extend`` (continuous transitions only) — the parent scene's last frames (default 9 = one 8-frame latent
  chunk plus the causal first frame) as a video condition at frame 0, a true extension; a character the parent
  did not show cannot come from it, so its memory goes in as context;
* ``context`` — each character's memory as clean tokens *before* the clip (a :class:`MemoryInput` k latent
  slots back covers pixel time ``[-8k, -8k + 1)``, recorded as frame index ``-8k``), at half size by default, the
  best memory nearest the clip, at most ``max_context``;
* ``reference`` — one IC-LoRA reference sheet (:mod:`.sheets`): the place's reference image and each
  character's best appearances, one cell each, described cell by cell in front of the prompt;
* ``keyframe`` — each character's memory as a single-frame condition at ``keyframe_index`` inside the clip,
  weaker after a time skip (what every cut did before the other modes existed).

On a continuous transition the extension is made in every mode (it is the shot going on); the mode says how the
characters reach the model. A character's memory is its best retrieved prior appearance (a ``Candidate``) or,
when retrieval finds none, its reference image: so the reference conditions its first scene. Explicit
``Reference``s in the scene spec are keyframes with their own index and strength, as the author placed them; a
character (or costume) reference replaces that character's retrieved memory. A cut with nothing else to go on
carries the parent's last frame weakly, for the look, in the scene's mode (context, or a keyframe).

Keyframe placement follows LTX-2's latent grid (frame 0, then 1, 9, 17, ... for a temporal stride of 8). Frame 0
holds one condition only (it overwrites the first latent): a later claimant moves to the next slot, and nothing
but the extension is placed inside the extension's frames. Other slots may hold several keyframes (they are
appended as extra tokens at the same time position).

The plan returns the generator inputs, one ``ConditionRecord`` per memory used (role, mode, target, temporal
position, strength, retrieval score and a readable reason) for the ``CONDITIONED_ON`` provenance edges, and notes
on what was wanted but not possible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from ..domain import MEMORY_MODES, Candidate, Character, ConditionRecord, Environment, SceneSpec, Transition
from .generators.base import ConditionInput, MemoryInput, fitting_downscale
from .sheets import Panel, SheetPlan, layout

@dataclass(frozen=True)
class ConditioningParams:
    """Every knob of the conditioning plan, with its default (the ``[engine]`` keys of storygraph.toml).

    extension_frames: parent frames given to a continuous transition; rounded down to 8k+1 (9 = one
        latent chunk + the first frame, the smallest real extension).
    extension_strength: 1.0 keeps the parent's frames exactly (a seamless continuation).
    memory_continuous / memory_cut / memory_time_skip: the memory mode of each transition kind (module docstring).
    context_downscale: context memory is encoded at 1/d of the output's width and height (d² fewer tokens).
    max_context: at most this many context memories per scene (the highest-scoring characters win).
    reference_views: a character's best appearances shown in its cell of a reference sheet.
    reference_loop: the sheet as a static video the clip's length (as the Ingredients IC-LoRA was trained).
    keyframe_index: output frame of memory in keyframe mode (0: the shot opens on it).
    keyframe_strength: strength of memory in keyframe mode; lower leaves room for the new scene.
    time_skip_strength: the same after a time skip (people change over time); None: keyframe_strength.
    max_keyframes: at most this many keyframe memories (the highest-scoring characters win).
    look_strength: on a cut or time skip that gets no other condition (its characters have no memory and it
        names no reference), the parent's last frame at this low strength carries the look — grade,
        lighting, palette — across the cut without fixing its content; 0 turns it off.
    temporal_stride / spatial_stride: the VAE's compression (8 in time, 32 in space for LTX-2).
    """

    extension_frames: int = 9
    extension_strength: float = 1.0
    memory_continuous: str = "extend"
    memory_cut: str = "auto"
    memory_time_skip: str = "auto"
    context_downscale: int = 2
    max_context: int = 4
    reference_views: int = 2
    reference_loop: bool = True
    keyframe_index: int = 0
    keyframe_strength: float = 0.6
    time_skip_strength: Optional[float] = 0.5
    max_keyframes: int = 4
    look_strength: float = 0.2
    temporal_stride: int = 8
    spatial_stride: int = 32

    @classmethod
    def from_config(cls, section) -> "ConditioningParams":
        """Take the fields of this class that ``section`` (e.g. ``Config.engine``) has; keep the rest."""
        known = {f.name for f in fields(cls)}
        src = section if isinstance(section, Mapping) else {k: getattr(section, k) for k in known if hasattr(section, k)}
        return cls(**{k: v for k, v in src.items() if k in known})

    def mode_for(self, kind: Optional[str]) -> str:
        """The configured mode of a transition kind (an opening scene, ``None``, is a new shot: as a cut)."""
        return {"continuous": self.memory_continuous, "time_skip": self.memory_time_skip}.get(kind or "", self.memory_cut)


def resolve_mode(scene: SceneSpec, kind: Optional[str], params: ConditioningParams, reference_available: bool,
                 override: Optional[str] = None) -> tuple[str, list[str]]:
    """The scene's memory mode and notes on any fallback: ``override`` (e.g. a comparison run), else the scene's
    ``memory``, else the transition kind's mode from the config; ``auto`` becomes ``reference`` when an IC-LoRA is
    configured, else ``context``."""
    notes: list[str] = []
    where = "asked for" if override else "the scene's memory" if scene.memory else "the config"
    mode = override or scene.memory or params.mode_for(kind)
    if mode == "auto":
        mode = "reference" if reference_available else "context"
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r} (expected one of: auto, {', '.join(MEMORY_MODES)})")
    if mode == "extend" and kind != "continuous":
        notes.append(f"memory mode extend ({where}) needs a continuous transition; used context")
        mode = "context"
    if mode == "reference" and not reference_available:
        notes.append(f"memory mode reference ({where}) needs an IC-LoRA ([models] ic_lora); used context")
        mode = "context"
    return mode, notes


@dataclass
class ConditioningPlan:
    mode: str = "keyframe"  # the scene's memory mode
    conditions: list = field(default_factory=list)  # ConditionInput / MemoryInput for the generator
    records: list = field(default_factory=list)  # list[ConditionRecord], one per memory used
    notes: list = field(default_factory=list)  # what was wanted but not possible, in words
    sheet: Optional[SheetPlan] = None  # reference mode: the panels of the IC-LoRA reference sheet

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


@dataclass
class _Memory:
    """One character's memory for a scene: its best prior appearances, or its reference image."""

    cid: str
    candidates: list  # Candidates with frames, best first
    reference: Optional[str] = None  # the character's reference image, when nothing was retrieved

    @property
    def score(self) -> float:
        return self.candidates[0].score if self.candidates else float("-inf")


def plan_conditioning(
    scene: SceneSpec,
    transition: Optional[Transition],
    memories: Mapping[str, Sequence[Candidate]],
    parent_last_frames: Optional[Sequence] = None,
    *,
    params: ConditioningParams = ConditioningParams(),
    frames: Optional[int] = None,
    width: Optional[int] = None,
    height: Optional[int] = None,
    names: Optional[Mapping[str, str]] = None,
    characters: Optional[Sequence[Character]] = None,
    environment: Optional[Environment] = None,
    parent_characters: Optional[Sequence[str]] = None,
    mode: Optional[str] = None,
    reference_available: bool = False,
    base_dir: Optional[Union[str, os.PathLike]] = None,
) -> ConditioningPlan:
    """Plan a scene's conditions.

    scene: the scene spec (its characters, references and ``memory`` mode; ``frames``/``width``/``height`` if
        resolved). transition: the edge into the scene (None for an opening scene).
    memories: retrieved candidates per character id (best first or not: the highest score is used).
    parent_last_frames: the parent take's last frames (uint8 arrays or image paths, oldest first).
    frames / width / height: the output size (default the scene's, else 121 frames of 768x512).
    names: character id -> display name. characters: the cast (names, descriptions, reference images: a
        character's reference stands in when nothing was retrieved). environment: the place (its reference
        image goes into a reference sheet). parent_characters: who the parent scene showed (in extend mode the
        others' memory goes in as context; None: the parent showed this scene's cast).
    mode: a memory mode for this plan alone (e.g. comparing modes); otherwise the scene's, then the config's.
    reference_available: an IC-LoRA is configured (``auto`` means reference; reference mode is possible).
    base_dir: folder that relative reference paths are resolved against (the story file's folder).
    """
    cast = {c.id: c for c in (characters or ())}
    names = {**{c.id: c.name for c in cast.values()}, **dict(names or {})}
    n_frames = int(frames or scene.frames or 121)
    out_w, out_h = int(width or scene.width or 768), int(height or scene.height or 512)
    kind = transition.kind if transition is not None else None
    scene_mode, mode_notes = resolve_mode(scene, kind, params, reference_available, mode)
    slots = _Slots(n_frames, params.temporal_stride)
    plan = ConditioningPlan(mode=scene_mode, notes=list(mode_notes))
    stride = params.temporal_stride

    def label(cid: str) -> str:
        return names.get(cid, cid)

    # 1. continuous: the parent's last frames at frame 0 (the shot goes on, whatever the characters' mode)
    if kind == "continuous":
        available = list(parent_last_frames or [])
        if available:
            want = max(1, min(int(params.extension_frames), len(available)))
            k = (want - 1) // stride * stride + 1
            k = min(k, (n_frames - 1) // stride * stride + 1)
            used = available[-k:]
            slots.zero_taken = True
            slots.reserved_until = k
            plan.conditions.append(ConditionInput(list(used), 0, params.extension_strength))
            plan.records.append(ConditionRecord(
                role="extension", target_kind="Scene", target_id=transition.from_id, frame_index=0,
                strength=float(params.extension_strength), score=None, mode="extend",
                reason=(f"continuous from {transition.from_id}: its last {k} frame{'s' if k != 1 else ''} "
                        f"at index 0, strength {_strength(params.extension_strength)}"),
            ))
        else:
            plan.notes.append(f"continuous from {transition.from_id}, but its last frames are missing: "
                              "no extension")

    # 2. explicit references: keyframes where the author placed them (they win over retrieved memory)
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
            if memories.get(ref.character) or (cast.get(ref.character) and cast[ref.character].reference_path):
                replaces = f"; replaces {label(ref.character)}'s memory"
        plan.conditions.append(ConditionInput([full], at, float(ref.strength)))
        plan.records.append(ConditionRecord(
            role="reference", target_kind="Reference", target_id=path, frame_index=at,
            strength=float(ref.strength), score=None, mode="keyframe",
            reason=(f"reference ({ref.kind}{who}): {path} at index {at}, strength {_strength(ref.strength)}"
                    f"{moved}{replaces}"),
        ))

    # 3. each character's memory: its best prior appearances, else its reference image
    if kind == "time_skip":
        why = f"time skip (gap {transition.effective_gap:g})"
    elif kind == "cut":
        why = "cut"
    elif kind == "continuous":
        why = f"continuous from {transition.from_id}"
    else:
        why = "opening scene"
    shown_before = set(scene.characters if parent_characters is None else parent_characters)
    wanted: list[_Memory] = []
    for cid in scene.characters:
        if cid in referenced:
            continue
        if scene_mode == "extend" and cid in shown_before:
            continue  # the extension carries who the parent showed
        cands = sorted((c for c in (memories.get(cid) or []) if getattr(c.appearance, "frame_path", None)),
                       key=lambda c: -c.score)
        ref_path = cast[cid].reference_path if cid in cast else None
        if not cands and not ref_path:
            if kind is not None:
                plan.notes.append(f"{why}: no prior appearance of {label(cid)} on this timeline and no reference image")
            continue
        wanted.append(_Memory(cid, cands, None if cands else ref_path))
    wanted.sort(key=lambda m: -m.score)  # appearances by score, then reference images (in cast order)

    def source(m: _Memory, cand: Optional[Candidate] = None) -> tuple[str, str, list, Optional[float], str]:
        """(target kind, target id, frames, score, words) of a memory."""
        if m.reference is not None:
            path = m.reference
            return ("Reference", path, [str(resolve_reference_path(path, base_dir))], None,
                    f"{label(m.cid)}'s reference image {path} (no prior appearance on this timeline)")
        c = cand or m.candidates[0]
        a = c.appearance
        return ("Appearance", a.id, [a.frame_path], float(c.score),
                f"{label(m.cid)}'s nearest prior appearance (scene {a.scene_id}, {score_text(c)})")

    context_mode = scene_mode in ("context", "extend")
    if scene_mode == "reference":
        described = {cid: _short(c.description) for cid, c in cast.items()}
        plan.sheet = _sheet(plan, wanted, environment, source, label, described, params, why, out_w, out_h, base_dir)
        if plan.sheet is None:
            plan.mode = scene_mode = "context"  # nothing to put on a sheet: the look, if any, goes in as context
            context_mode = True
    elif context_mode:
        d = fitting_downscale(out_h, out_w, params.context_downscale, params.spatial_stride)
        size = "full size" if d == 1 else "half size" if d == 2 else f"1/{d} size"
        for rank, m in enumerate(wanted):
            if rank >= params.max_context:
                plan.notes.append(f"{why}: {label(m.cid)}'s memory left out (max_context={params.max_context})")
                continue
            before = rank + 1
            target_kind, target_id, image, score, words = source(m)
            plan.conditions.append(MemoryInput(image, before=before, strength=1.0, downscale=d))
            plan.records.append(ConditionRecord(
                role="memory", target_kind=target_kind, target_id=target_id, frame_index=-stride * before,
                strength=1.0, score=score, mode="context",
                reason=(f"{why}: {words} as context memory {before} latent slot{'s' if before > 1 else ''} before "
                        f"the clip (frames [{-stride * before}, {-stride * before + 1})), {size}, strength 1.0"),
            ))
    else:  # keyframe
        strength = params.keyframe_strength
        if kind == "time_skip" and params.time_skip_strength is not None:
            strength = params.time_skip_strength
        for rank, m in enumerate(wanted):
            if rank >= params.max_keyframes:
                plan.notes.append(f"{why}: {label(m.cid)}'s memory left out (max_keyframes={params.max_keyframes})")
                continue
            at = slots.take(params.keyframe_index)
            if at is None:
                plan.notes.append(f"{why}: no free frame position for {label(m.cid)}'s memory")
                continue
            target_kind, target_id, image, score, words = source(m)
            plan.conditions.append(ConditionInput(image, at, float(strength)))
            plan.records.append(ConditionRecord(
                role="memory", target_kind=target_kind, target_id=target_id, frame_index=at,
                strength=float(strength), score=score, mode="keyframe",
                reason=f"{why}: {words} as a keyframe at index {at}, strength {_strength(strength)}",
            ))

    # 4. nothing else to go on across a cut: the parent's look, weakly
    if (kind in ("cut", "time_skip") and not plan.conditions and plan.sheet is None and params.look_strength > 0
            and parent_last_frames):
        last = list(parent_last_frames)[-1]
        look = float(params.look_strength)
        what = (f"{kind.replace('_', ' ')} from {transition.from_id} with no character memory or reference: its last "
                "frame")
        carry = "to carry the look (grade, light) across the cut"
        if context_mode:
            plan.conditions.append(MemoryInput([last], before=1, strength=look, downscale=1))
            plan.records.append(ConditionRecord(
                role="look", target_kind="Scene", target_id=transition.from_id, frame_index=-stride,
                strength=look, score=None, mode="context",
                reason=f"{what} as context memory before the clip (frames [{-stride}, {-stride + 1})), strength "
                       f"{_strength(look)}, {carry}"))
        else:
            at = slots.take(0)
            if at is not None:
                plan.conditions.append(ConditionInput([last], at, look))
                plan.records.append(ConditionRecord(
                    role="look", target_kind="Scene", target_id=transition.from_id, frame_index=at,
                    strength=look, score=None, mode="keyframe",
                    reason=f"{what} at index {at}, strength {_strength(look)}, {carry}"))
    return plan


def _sheet(plan: ConditioningPlan, wanted: list, environment: Optional[Environment], source, label, described: dict,
           params: ConditioningParams, why: str, width: int, height: int, base_dir) -> Optional[SheetPlan]:
    """Reference mode: the place's reference and each character's best appearances, one cell each."""
    panels: list[Panel] = []
    cells: list[list[tuple]] = []  # per panel: (target kind, target id, score, words, role)
    if environment is not None and environment.reference_path:
        path = environment.reference_path
        place = environment.name or environment.id
        panels.append(Panel("setting", f"{place}, {_short(environment.description)}",
                            (str(resolve_reference_path(path, base_dir)),)))
        cells.append([("Reference", path, None, f"{place}'s reference image {path}", "place")])
    for m in wanted:
        picks = m.candidates[: max(1, params.reference_views)] if m.candidates else [None]
        images, rows = [], []
        for cand in picks:
            target_kind, target_id, image, score, words = source(m, cand)
            images.extend(image)
            rows.append((target_kind, target_id, score, words, "memory"))
        desc = described.get(m.cid, "")
        panels.append(Panel("character", label(m.cid) + (f", {desc}" if desc else ""), tuple(images)))
        cells.append(rows)
    if not panels:
        plan.notes.append(f"{why}: nothing remembered for a reference sheet")
        return None
    positions = layout(len(panels), width, height)
    for pos, rows in zip(positions, cells):
        for target_kind, target_id, score, words, role in rows:
            plan.records.append(ConditionRecord(
                role=role, target_kind=target_kind, target_id=target_id, frame_index=0, strength=1.0, score=score,
                mode="reference", reason=f"{why}: {words} in the reference sheet ({pos}), strength 1.0"))
    return SheetPlan(panels=panels, strength=1.0, loop=params.reference_loop)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def score_text(cand: Candidate) -> str:
    """A retrieval score in words whose parts add up to it, then the raw values behind each part:
    ``score 1.75 = relevance 1.00 + retention 0.50 + quality 0.25 (text+identity 0.28, retention 0.87 at memory
    strength 2.00 after 1 use on this timeline, identity 0.88)``."""
    from .memory import shown_terms

    terms = cand.terms or (cand.score, 0.0, 0.0)
    total, (rel, ret, q) = shown_terms(terms)
    strength = cand.strength if cand.strength is not None else cand.appearance.strength
    uses = f" after {cand.uses} use{'s' if cand.uses != 1 else ''} on this timeline" if cand.uses else ""
    return (f"score {total} = relevance {rel} + retention {ret} + quality {q} (text+identity "
            f"{_fmt(cand.relevance)}, retention {_fmt(cand.retention)} at memory strength {float(strength):.2f}"
            f"{uses}, identity {_fmt(cand.quality)})")


def resolve_reference_path(path: str, base_dir: Optional[Union[str, os.PathLike]]) -> Path:
    """A reference path as the plan reads it: absolute, or relative to ``base_dir``."""
    return Path(path) if os.path.isabs(path) or base_dir is None else Path(base_dir) / path
