"""Plain domain objects of a story: what a story file describes and what the engine writes back.

No I/O, no torch, no database: every other part of storygraph speaks in these types.

The generation settings of a scene (size, frames, steps, ...) and the scores of a take are declared once,
here, as the fields of :class:`GenerationDefaults` and :class:`Scores`; each generation field carries a
:class:`Setting` (help text and allowed values) in its metadata. The story file reader, the viewer's API, the
graph's row mapping, the generator request and the request fingerprint all walk these fields, so a new
setting is one line here (plus the Cypher files that name the graph's properties, which a test checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Optional, get_type_hints

TransitionKind = Literal["continuous", "cut", "time_skip"]
TRANSITION_KINDS: tuple[str, ...] = ("continuous", "cut", "time_skip")

SceneStatus = Literal["planned", "generating", "done", "failed", "stale", "interrupted"]
#: planned: not generated yet; generating: a worker is on it; done: its chosen take continues the timeline;
#: failed: its last generation raised; stale: it has media, but something it was made from changed since
#: (its ``stale_reason`` says what); interrupted: the process generating it died (set when a story is opened).
SCENE_STATUSES: tuple[str, ...] = ("planned", "generating", "done", "failed", "stale", "interrupted")

#: How a scene's memory reaches the model (see README "Memory modes"):
#: extend    the parent's last frames at index 0 (a continuous transition only);
#: context   remembered appearances as clean tokens placed before the clip in time, never shown in it;
#: reference an IC-LoRA reference sheet of the remembered appearances and the place;
#: keyframe  a frame placed inside the clip's timeline (what a story file's explicit references ask for).
MemoryMode = Literal["extend", "context", "reference", "keyframe"]
MEMORY_MODES: tuple[str, ...] = ("extend", "context", "reference", "keyframe")

#: Story time that passes across a transition when the story file gives no ``gap``.
DEFAULT_GAPS: dict[str, float] = {"continuous": 1.0, "cut": 2.0, "time_skip": 10.0}

#: The largest story time across one transition, and the latest clock a scene may reach: every clock stays a
#: finite number that JSON, the graph and the viewer's layout can hold.
MAX_GAP = 1e6
MAX_CLOCK = 1e12
#: The longest memory time constant of a character.
MAX_TAU = 1e9


@dataclass(frozen=True)
class Setting:
    """What a declared field means and which values it takes (a field's ``metadata["setting"]``): the
    generation settings, and the bounded numbers of characters, references and transitions.

    Numbers must lie in ``[lo, hi]`` (``lo`` itself excluded with ``lo_open``); with ``step``, an integer must
    also be ``offset`` more than a multiple of ``step``; with ``choices``, a value must be one of them.
    ``expected`` says it in words, for error messages. The story rules (``storygraph.rules``) check against it,
    and settings files (``storygraph.toml``) use the same declaration for their keys' help.
    """

    help: str
    expected: str = "any text"
    lo: Optional[float] = None
    hi: Optional[float] = None
    step: Optional[int] = None
    offset: int = 0
    choices: tuple = ()
    lo_open: bool = False  # ``lo`` itself is not allowed

    def allows(self, value: Any) -> bool:
        """Whether a value of the right type is allowed (callers check the type)."""
        if self.choices and value not in self.choices:
            return False
        if isinstance(value, (str, bool)) or value is None:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if (self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo))) or \
                (self.hi is not None and value > self.hi):
            return False
        return self.step is None or value % self.step == self.offset


def setting(default: Any, help: str, **allowed: Any):
    """A dataclass field declaring one setting: its default, its meaning and its allowed values."""
    return field(default=default, metadata={"setting": Setting(help, **allowed)})


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    description: str = ""
    reference_path: Optional[str] = None  # an image of the character, absolute or relative to the story file
    # None: MemoryParams.tau_character
    decay_tau: Optional[float] = setting(None, "the character's memory time constant (story time)",
                                         expected=f"a time constant above 0, at most {MAX_TAU:g}",
                                         lo=0, hi=MAX_TAU, lo_open=True)
    reference_sha: Optional[str] = None  # fingerprint of the reference image's bytes (None: not known)


@dataclass(frozen=True)
class Environment:
    id: str
    description: str
    name: str = ""
    reference_path: Optional[str] = None
    reference_sha: Optional[str] = None  # fingerprint of the reference image's bytes (None: not known)


@dataclass(frozen=True)
class Reference:
    """An explicit conditioning image named in the story file; overrides retrieved memory."""

    path: str
    kind: str = "character"  # character | costume | place | frame
    character: Optional[str] = None  # for kind character/costume: whose reference it is
    frame_index: int = setting(0, "the output frame the condition is placed at",
                               expected="a frame index from 0 to frames - 1", lo=0, hi=1024)
    strength: float = setting(1.0, "how strongly the image conditions the scene", expected="a strength from 0 to 1",
                              lo=0, hi=1)
    sha: Optional[str] = None  # fingerprint of the image's bytes (None: not known)


@dataclass(frozen=True)
class GenerationDefaults:
    """The generation settings of a scene, with their defaults: the one list of them (see the module docstring).

    The order is the order of the request fingerprint (``engine.takes``); add new settings at the end.
    """

    negative_prompt: str = setting("worst quality, inconsistent motion, blurry, jittery, distorted",
                                   "what the picture must not look like")
    width: int = setting(768, "frame width in pixels", expected="a multiple of 32 from 32 to 4096",
                         lo=32, hi=4096, step=32)
    height: int = setting(512, "frame height in pixels", expected="a multiple of 32 from 32 to 4096",
                          lo=32, hi=4096, step=32)
    frames: int = setting(121, "frames in the clip (LTX-2 takes 8k+1)",
                          expected="8k+1 frames from 9 to 1025 (9, 17, 25, …, 121, …, 1025)",
                          lo=9, hi=1025, step=8, offset=1)
    fps: float = setting(24.0, "frames per second", expected="a frame rate from 1 to 120", lo=1, hi=120)
    steps: int = setting(8, "denoising steps", expected="an integer from 1 to 200", lo=1, hi=200)
    guidance: float = setting(1.0, "classifier-free guidance scale (1: none)",
                              expected="a guidance scale from 0 to 50 (1 means none)", lo=0, hi=50)
    seed: int = setting(0, "random seed of take 0 (take n uses seed + n)",
                        expected=f"an integer from 0 to {2**32 - 1}", lo=0, hi=2**32 - 1)


_GENERATION_TYPES: dict[str, type] = get_type_hints(GenerationDefaults)


def generation_settings() -> list[tuple[str, type, Setting]]:
    """``(name, type, setting)`` of every generation setting, in declaration order."""
    return [(f.name, _GENERATION_TYPES[f.name], f.metadata["setting"]) for f in fields(GenerationDefaults)]


def with_generation_settings(*, before: str, optional: bool):
    """A class decorator (under ``@dataclass``) that inserts a field for every generation setting just before
    the class's field ``before``, so that GenerationDefaults stays the only list of them. ``optional``: the
    fields default to ``None`` (the story's default applies); otherwise to the declared defaults."""

    def add(cls):
        annotations = {}
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if name == before:
                for f in fields(GenerationDefaults):
                    kind = _GENERATION_TYPES[f.name].__name__
                    annotations[f.name] = f"Optional[{kind}]" if optional else kind
                    setattr(cls, f.name, field(default=None if optional else f.default, metadata=f.metadata))
            annotations[name] = annotation
        cls.__annotations__ = annotations
        return cls

    return add


@dataclass(frozen=True)
@with_generation_settings(before="references", optional=True)
class SceneSpec:
    """A scene as the author wrote it, plus an optional field per generation setting (``width``, ``frames``,
    ... from :class:`GenerationDefaults`); ``None`` falls back to the story's generation defaults."""

    id: str
    action: str
    characters: tuple[str, ...] = ()
    environment: Optional[str] = None
    title: str = ""
    lighting: str = ""
    weather: str = ""
    camera: str = ""
    # one Optional field per generation setting is inserted here
    references: tuple[Reference, ...] = ()
    memory: Optional[str] = None  # one of MEMORY_MODES; None: the mode storygraph.toml gives the transition kind

    def generation(self) -> dict[str, Any]:
        """The generation settings as given (``None`` where the story's default applies)."""
        return {f.name: getattr(self, f.name) for f in fields(GenerationDefaults)}

    def resolved(self, defaults: GenerationDefaults) -> "SceneSpec":
        """A copy with every generation field filled from ``defaults``."""
        return replace(self, **{k: getattr(defaults, k) for k, v in self.generation().items() if v is None})


@dataclass(frozen=True)
class Transition:
    from_id: str
    to_id: str
    kind: str = "cut"
    # None: DEFAULT_GAPS[kind]
    gap: Optional[float] = setting(None, "story time across the transition",
                                   expected=f"a story-time gap from 0 to {MAX_GAP:g}", lo=0, hi=MAX_GAP)

    @property
    def effective_gap(self) -> float:
        return float(self.gap) if self.gap is not None else DEFAULT_GAPS[self.kind]


@dataclass(frozen=True)
class MemoryParams:
    """Every constant of story memory, with its default (the ``[memory]`` section of storygraph.toml). See
    README "Memory" for the maths."""

    tau_story: float = setting(10.0, "transition retention: decay = exp(-gap / tau_story)")
    tau_character: float = setting(20.0, "appearance retention: R = exp(-dclock / (tau_c * strength))")
    strength_init: float = setting(1.0, "strength of a new appearance with identity score 1.0")
    strength_min: float = setting(0.25, "the weakest a memory gets")
    strength_max: float = setting(5.0, "the strongest a memory gets")
    reinforce_step: float = setting(1.0, "strength added on good reuse")
    penalty_step: float = setting(1.0, "strength removed on reuse that led to drift")
    reinforce_threshold: float = setting(0.8, "identity score at or above which reuse counts as good")
    drift_threshold: float = setting(0.5, "identity score (the one the studio shows) below which an appearance is "
                                     "never used, and below which a reuse weakens the memory")
    w_relevance: float = setting(1.0, "retrieval score weight of relevance")
    w_recency: float = setting(1.0, "retrieval score weight of retention")
    w_quality: float = setting(0.5, "retrieval score weight of the appearance's identity score")
    relevance_text_weight: float = setting(0.5, "relevance = a * text cosine + (1 - a) * identity similarity")
    candidates: int = setting(64, "vector candidates taken per space before scoring")


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


class Lineage:
    """The branches a timeline passed through before its own: ``(branch, last pos on it)`` pairs, oldest first.

    A persistent chain: a scene that starts a branch adds one link to its parent's lineage and every scene
    below shares it, so the placements of a whole story cost O(scenes), however deeply it branches (a tuple
    per scene would cost O(scenes x depth)). It iterates, compares and hashes like the tuple of its pairs, and
    a tuple of pairs converts to it (``Lineage.of``).
    """

    __slots__ = ("parent", "branch", "upto", "depth", "_hash")

    def __init__(self, parent: Optional["Lineage"] = None, branch: str = "", upto: int = 0):
        self.parent = parent if parent else None  # the empty lineage is never linked
        self.branch = branch
        self.upto = int(upto)
        self.depth = 0 if parent is None and not branch else (len(parent) if parent else 0) + 1
        self._hash: Optional[int] = None

    @classmethod
    def of(cls, pairs) -> "Lineage":
        if isinstance(pairs, Lineage):
            return pairs
        out = EMPTY_LINEAGE
        for branch, upto in pairs or ():
            out = out.then(branch, upto)
        return out

    def then(self, branch: str, upto: int) -> "Lineage":
        """This lineage followed by ``(branch, upto)``."""
        return Lineage(self, branch, upto)

    def upto_on(self, branch: str) -> Optional[int]:
        """The last position of ``branch`` on this lineage, or None when it does not pass through it."""
        link = self
        while link is not None and link.depth:
            if link.branch == branch:
                return link.upto
            link = link.parent
        return None

    def __len__(self) -> int:
        return self.depth

    def __bool__(self) -> bool:
        return self.depth > 0

    def __iter__(self):
        links = []
        link = self
        while link is not None and link.depth:
            links.append((link.branch, link.upto))
            link = link.parent
        return reversed(links)

    def __eq__(self, other) -> bool:
        if isinstance(other, Lineage):
            if self.depth != other.depth:
                return False
            a, b = self, other
            while a is not b and a is not None and a.depth:  # equal depths all the way down
                if a.branch != b.branch or a.upto != b.upto:
                    return False
                a, b = a.parent, b.parent
            return True
        if isinstance(other, (tuple, list)):
            return tuple(self) == tuple(tuple(p) for p in other)
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self))
        return self._hash

    def __repr__(self) -> str:
        return f"Lineage({tuple(self)!r})"


EMPTY_LINEAGE = Lineage()


@dataclass(frozen=True)
class Placement:
    """Where a scene sits in story time and on which timeline.

    ``branch``/``pos`` name the scene's place on its branch; ``lineage`` lists, for every branch the
    scene's timeline passed through before its own, ``(branch, last pos on that branch)`` (a
    :class:`Lineage`; a tuple of pairs is converted). Scene ``a`` is an ancestor of ``s`` iff
    ``a.branch == s.branch and a.pos < s.pos`` or ``a.pos <= upto`` for ``(a.branch, upto)`` in
    ``s.lineage``: O(depth of branching), no path query.
    """

    scene_id: str
    clock: float
    branch: str
    pos: int
    parent_id: Optional[str] = None
    lineage: Lineage = EMPTY_LINEAGE

    def __post_init__(self):
        if not isinstance(self.lineage, Lineage):
            object.__setattr__(self, "lineage", Lineage.of(self.lineage))

    def has_ancestor(self, branch: str, pos: int) -> bool:
        if branch == self.branch:
            return pos < self.pos
        upto = self.lineage.upto_on(branch)
        return upto is not None and pos <= upto

    def same_place(self, other: "Placement") -> bool:
        """Whether ``other`` names the same place (clock, branch, position, parent); the lineage follows from
        these and is not compared (that would cost the depth of branching)."""
        return (self.scene_id, self.clock, self.branch, self.pos, self.parent_id) == \
            (other.scene_id, other.clock, other.branch, other.pos, other.parent_id)


@dataclass(frozen=True)
class Scores:
    """A take's scores (see README "Observer scores"): every field but ``identity_by_character`` is one score,
    stored under its own name on the Take and on the Scene that chose it."""

    text_alignment: Optional[float] = None
    subject_consistency: Optional[float] = None
    background_consistency: Optional[float] = None
    identity: Optional[float] = None  # mean over the scene's characters
    transition_smoothness: Optional[float] = None
    identity_by_character: dict = field(default_factory=dict)

    @staticmethod
    def names() -> tuple[str, ...]:
        """The scores, in declaration order."""
        return tuple(f.name for f in fields(Scores) if f.name != "identity_by_character")

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.names()}


@dataclass
class Appearance:
    """One character seen in one take of one scene: the unit of visual memory.

    ``strength`` and ``reinforced_clock`` are the memory as it was formed (``strength_init * identity`` at the
    scene's clock) and never change: what a later scene remembers of it is derived from the uses on that scene's
    own timeline (:func:`storygraph.engine.memory.strength_on_timeline`), so no branch changes another's memory.
    ``uses`` lists the scenes whose chosen take used it (a copy of those ``CONDITIONED_ON`` edges, kept with it).
    """

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
    # (scene id, identity kept) for every scene whose chosen take was conditioned on it, on any timeline
    uses: list = field(default_factory=list)


@dataclass(frozen=True)
class ConditionRecord:
    """Provenance of one conditioning input: a ``CONDITIONED_ON`` edge."""

    role: str  # extension | memory | reference | place | look
    target_kind: str  # "Appearance" | "Scene" | "Reference"
    target_id: str
    frame_index: int  # the output frame it sits at; negative for context memory: the pixel time before the clip
    strength: float
    score: Optional[float]
    reason: str
    mode: str = ""  # how it reached the model: one of MEMORY_MODES


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    ref_id: str
    at: str
    payload: str = "{}"  # JSON text


@dataclass(frozen=True)
class Candidate:
    """A prior appearance retrieved as memory for a scene, with the terms of its score.

    ``terms`` are the three weighted, min-max normalised parts of ``score`` (relevance, retention, quality): they
    add up to it. ``strength`` and ``reinforced_clock`` are the memory's on this scene's timeline: as formed,
    then moved by each of the ``uses`` an ancestor of the scene made of it."""

    appearance: Appearance
    score: float  # w_rel*norm(relevance) + w_rec*norm(retention) + w_q*norm(quality) == sum(terms)
    relevance: float  # raw: blend of CLIP text cosine and DINOv2 identity similarity
    retention: float  # raw: exp(-dclock / (tau_c * strength)) with this timeline's strength
    quality: float  # raw: the appearance's identity score at observation
    identity: float  # raw: DINOv2 cosine to the character's reference (or first accepted appearance)
    terms: tuple = ()  # (relevance, retention, quality) as they enter the score
    strength: Optional[float] = None  # on this timeline (None: as formed)
    reinforced_clock: Optional[float] = None  # on this timeline (None: as formed)
    uses: int = 0  # uses of this memory by ancestors of the scene

    @property
    def frame_path(self) -> str:
        return self.appearance.frame_path
