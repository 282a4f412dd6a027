"""Plain domain objects of a story: what a story file describes and what the engine writes back.

No I/O, no torch, no database: every other part of storygraph speaks in these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional

TransitionKind = Literal["continuous", "cut", "time_skip"]
TRANSITION_KINDS: tuple[str, ...] = ("continuous", "cut", "time_skip")

SceneStatus = Literal["planned", "generating", "done", "failed"]
SCENE_STATUSES: tuple[str, ...] = ("planned", "generating", "done", "failed")

#: Story time that passes across a transition when the story file gives no ``gap``.
DEFAULT_GAPS: dict[str, float] = {"continuous": 1.0, "cut": 2.0, "time_skip": 10.0}


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    description: str = ""
    reference_path: Optional[str] = None  # an image of the character, absolute or relative to the story file
    decay_tau: Optional[float] = None  # per-character memory time constant; None: MemoryParams.tau_character


@dataclass(frozen=True)
class Environment:
    id: str
    description: str
    name: str = ""
    reference_path: Optional[str] = None


@dataclass(frozen=True)
class Reference:
    """An explicit conditioning image named in the story file; overrides retrieved memory."""

    path: str
    kind: str = "character"  # character | costume | place | frame
    character: Optional[str] = None  # for kind character/costume: whose reference it is
    frame_index: int = 0  # output frame the condition is placed at
    strength: float = 1.0


@dataclass(frozen=True)
class GenerationDefaults:
    width: int = 768
    height: int = 512
    frames: int = 121
    fps: float = 24.0
    steps: int = 8
    guidance: float = 1.0
    seed: int = 0
    negative_prompt: str = "worst quality, inconsistent motion, blurry, jittery, distorted"


@dataclass(frozen=True)
class SceneSpec:
    """A scene as the author wrote it. ``None`` fields fall back to the story's generation defaults."""

    id: str
    action: str
    characters: tuple[str, ...] = ()
    environment: Optional[str] = None
    title: str = ""
    lighting: str = ""
    weather: str = ""
    camera: str = ""
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    fps: Optional[float] = None
    seed: Optional[int] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    negative_prompt: Optional[str] = None
    references: tuple[Reference, ...] = ()

    def resolved(self, defaults: GenerationDefaults) -> "SceneSpec":
        """A copy with every generation field filled from ``defaults``."""
        fill = {}
        for name in ("width", "height", "frames", "fps", "seed", "steps", "guidance", "negative_prompt"):
            if getattr(self, name) is None:
                fill[name] = getattr(defaults, name)
        return replace(self, **fill)


@dataclass(frozen=True)
class Transition:
    from_id: str
    to_id: str
    kind: str = "cut"
    gap: Optional[float] = None  # story time across the transition; None: DEFAULT_GAPS[kind]

    @property
    def effective_gap(self) -> float:
        return float(self.gap) if self.gap is not None else DEFAULT_GAPS[self.kind]


@dataclass(frozen=True)
class MemoryParams:
    """Every constant of story memory, with its default. See README "Memory" for the maths."""

    tau_story: float = 10.0  # transition retention: decay = exp(-gap / tau_story)
    tau_character: float = 20.0  # appearance retention: R = exp(-dclock / (tau_c * strength))
    strength_init: float = 1.0  # strength of a new appearance with identity score 1.0
    strength_min: float = 0.25
    strength_max: float = 5.0
    reinforce_step: float = 1.0  # added on good reuse
    penalty_step: float = 1.0  # removed on reuse that led to drift
    reinforce_threshold: float = 0.8  # identity score at or above which reuse counts as good
    drift_threshold: float = 0.5  # identity similarity below which an appearance is never used
    w_relevance: float = 1.0
    w_recency: float = 1.0
    w_quality: float = 0.5
    relevance_text_weight: float = 0.5  # relevance = a * text cosine + (1 - a) * identity similarity
    candidates: int = 64  # vector candidates taken per space before scoring


@dataclass(frozen=True)
class Story:
    id: str
    title: str
    characters: tuple[Character, ...] = ()
    environments: tuple[Environment, ...] = ()
    scenes: tuple[SceneSpec, ...] = ()
    transitions: tuple[Transition, ...] = ()
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    source_path: Optional[str] = None

    def character(self, cid: str) -> Character:
        return next(c for c in self.characters if c.id == cid)

    def scene(self, sid: str) -> SceneSpec:
        return next(s for s in self.scenes if s.id == sid)


@dataclass(frozen=True)
class Placement:
    """Where a scene sits in story time and on which timeline.

    ``branch``/``pos`` name the scene's place on its branch; ``lineage`` lists, for every branch the
    scene's timeline passed through before its own, ``(branch, last pos on that branch)``. Scene ``a`` is
    an ancestor of ``s`` iff ``a.branch == s.branch and a.pos < s.pos`` or ``a.pos <= upto`` for
    ``(a.branch, upto)`` in ``s.lineage``: O(depth of branching), no path query.
    """

    scene_id: str
    clock: float
    branch: str
    pos: int
    parent_id: Optional[str] = None
    lineage: tuple[tuple[str, int], ...] = ()

    def has_ancestor(self, branch: str, pos: int) -> bool:
        if branch == self.branch:
            return pos < self.pos
        for b, upto in self.lineage:
            if b == branch:
                return pos <= upto
        return False


@dataclass(frozen=True)
class Scores:
    text_alignment: Optional[float] = None
    subject_consistency: Optional[float] = None
    background_consistency: Optional[float] = None
    identity: Optional[float] = None  # mean over the scene's characters
    transition_smoothness: Optional[float] = None
    identity_by_character: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "text_alignment": self.text_alignment,
            "subject_consistency": self.subject_consistency,
            "background_consistency": self.background_consistency,
            "identity": self.identity,
            "transition_smoothness": self.transition_smoothness,
        }


@dataclass
class Appearance:
    """One character seen in one take of one scene: the unit of visual memory."""

    id: str
    character_id: str
    scene_id: str
    frame_index: int
    frame_path: str
    strength: float
    reinforced_clock: float
    identity_score: float
    clip: list  # CLIP image embedding, L2-normalised
    dino: list  # DINOv2 CLS embedding, L2-normalised
    clock: float = 0.0  # the scene's clock
    branch: str = ""
    pos: int = 0
    take: int = 0
    accepted: bool = True  # False for appearances of takes that do not continue the timeline


@dataclass(frozen=True)
class ConditionRecord:
    """Provenance of one conditioning input: a ``CONDITIONED_ON`` edge."""

    role: str  # extension | keyframe | reference
    target_kind: str  # "Appearance" | "Scene"
    target_id: str
    frame_index: int
    strength: float
    score: Optional[float]
    reason: str


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    ref_id: str
    at: str
    payload: str = "{}"  # JSON text


@dataclass(frozen=True)
class Candidate:
    """A prior appearance retrieved as memory for a scene, with the terms of its score."""

    appearance: Appearance
    score: float  # w_rel*relevance + w_rec*retention + w_q*quality, each term min-max normalised
    relevance: float  # raw: blend of CLIP text cosine and DINOv2 identity similarity
    retention: float  # raw: exp(-dclock / (tau_c * strength))
    quality: float  # raw: the appearance's identity score at observation
    identity: float  # raw: DINOv2 cosine to the character's reference (or first accepted appearance)

    @property
    def frame_path(self) -> str:
        return self.appearance.frame_path
