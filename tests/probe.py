"""See where every condition lands: a forward pre-hook on an LTX-2 transformer, for tests.

Every LTX-2 pipeline of diffusers calls ``pipe.transformer(...)`` with keyword arguments, among them:

* ``hidden_states`` (B, S, C): the packed video tokens, the clip's own grid first, appended tokens after;
* ``video_coords`` (B, 3, S, 2): per token [start, end) on (time, height, width); time in seconds (pixel frame /
  fps), height and width in pixels: what RoPE sees;
* ``timestep`` (B, S): the per-token timestep ``t * (1 - conditioning mask)`` (0: clean); ``sigma`` (B,): the
  step's ``t``;
* ``num_frames``, ``height``, ``width``: the latent size of the clip's grid (so it has F*H*W tokens).

So a token's strength is ``1 - timestep / sigma`` and its pixel frame ``coords_t * fps``. :class:`TokenProbe`
records a call and turns it into groups of tokens sharing kind, time span and strength; :func:`check` compares
them with what a plan says, in the planner's units (output frames, latent slots before the clip), computed here
from LTX-2's rules and not from the code under test:

* clip latent 0 covers pixel frame [0, 1), latent k >= 1 covers [8k - 7, 8k + 1);
* a keyframe at output frame i >= 1 sits on latent ``(i - 1) // 8 + 1`` and is appended at pixel frame
  ``8 (latent - 1) + 1``, one frame wide;
* context memory k slots before the clip covers [-8k, -8k + 1);
* IC-LoRA reference tokens follow the clip's own time grid from 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

STRIDE = 8


@dataclass
class Group:
    """A run of consecutive tokens that share kind, time span and strength."""

    kind: str  # "clip" (the generated clip's own grid) or "appended" (keyframe, memory, reference)
    t0: float  # pixel frame where the tokens start
    t1: float  # ... and end (exclusive)
    strength: float  # 1 - timestep / sigma: 1 clean, 0 generated
    n_tokens: int
    h_extent: tuple  # (lowest start, highest end) in pixels
    w_extent: tuple
    first_token: int

    @property
    def latent(self) -> int:
        return math.ceil(round(self.t0, 3) / STRIDE)

    def __str__(self) -> str:
        return (f"{self.kind:8s} frames [{self.t0:g}, {self.t1:g}) strength {self.strength:.2f} tokens {self.n_tokens} "
                f"h {self.h_extent} w {self.w_extent}")


@dataclass
class Capture:
    """One transformer call, reduced to per-token facts (batch element 0)."""

    groups: list
    clip_tokens: int
    clip_shape: tuple  # latent (F, H, W)
    spatial: int
    hidden: object = None  # the call's hidden_states[0] (tokens x channels), detached
    calls_seen: int = 0

    @property
    def canvas(self) -> tuple:
        _, h, w = self.clip_shape
        return (0, h * self.spatial), (0, w * self.spatial)

    def clip_frames(self) -> dict:
        """latent frame of the clip -> its strength (every token of a frame must agree, else a tuple)."""
        out: dict = {}
        for g in self.groups:
            if g.kind == "clip":
                out.setdefault(g.latent, []).append(g.strength)
        return {k: (v[0] if len(set(v)) == 1 else tuple(v)) for k, v in out.items()}

    def appended(self) -> list:
        return [g for g in self.groups if g.kind == "appended"]

    def tokens_of(self, group: Group):
        return self.hidden[group.first_token: group.first_token + group.n_tokens]

    def table(self) -> str:
        return "\n".join(str(g) for g in self.groups)


def reduce_call(kwargs: dict, spatial: int) -> Capture:
    coords = kwargs["video_coords"][0].detach().float().cpu()  # (3, S, 2)
    timestep = kwargs["timestep"][0].detach().float().cpu()  # (S,)
    sigma = kwargs.get("sigma")
    sigma = float(sigma.flatten()[0]) if sigma is not None else float(timestep.max())
    fps = float(kwargs.get("fps", 24.0))
    F, H, W = int(kwargs["num_frames"]), int(kwargs["height"]), int(kwargs["width"])
    S = coords.shape[1]
    t0 = [round(float(x) * fps, 3) for x in coords[0, :, 0]]
    t1 = [round(float(x) * fps, 3) for x in coords[0, :, 1]]
    hs = [(round(float(a)), round(float(b))) for a, b in coords[1].tolist()]
    ws = [(round(float(a)), round(float(b))) for a, b in coords[2].tolist()]
    strength = [round(1.0 - float(t) / sigma, 4) if sigma else 1.0 for t in timestep]
    clip = F * H * W
    groups = []
    i = 0
    while i < S:
        def key(j):
            return ("clip" if j < clip else "appended", t0[j], t1[j], strength[j])
        j = i
        while j + 1 < S and key(j + 1) == key(i):
            j += 1
        h, w = hs[i:j + 1], ws[i:j + 1]
        groups.append(Group(key(i)[0], t0[i], t1[i], strength[i], j - i + 1, (min(a for a, _ in h), max(b for _, b in h)),
                            (min(a for a, _ in w), max(b for _, b in w)), i))
        i = j + 1
    return Capture(groups, clip, (F, H, W), spatial, kwargs["hidden_states"][0].detach().float().cpu().clone())


class TokenProbe:
    """``with TokenProbe(pipe_or_transformer) as probe: ...`` records the first transformer call (every call with
    ``keep_all``); ``probe.first`` is its :class:`Capture`. The hook only reads; the run is unchanged."""

    def __init__(self, pipe_or_transformer, keep_all: bool = False):
        self.transformer = getattr(pipe_or_transformer, "transformer", pipe_or_transformer)
        self.spatial = int(self.transformer.config.vae_scale_factors[1])
        self.keep_all = keep_all
        self.calls: list = []
        self._handle = None

    def _hook(self, module, args, kwargs):
        if self.keep_all or not self.calls:
            self.calls.append(reduce_call(kwargs, self.spatial))

    def __enter__(self) -> "TokenProbe":
        self._handle = self.transformer.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def first(self) -> Capture:
        assert self.calls, "the transformer was never called"
        return self.calls[0]


@dataclass
class Expect:
    """One planned condition, in the planner's units.

    role "extension": ``n_frames`` parent frames opening the clip (they overwrite the first latent frames);
    "keyframe": one frame at output frame ``frame``; "memory": context memory ``before`` latent slots before the
    clip; "reference": IC-LoRA reference tokens, ``latent_frames`` of them on the clip's time grid, encoded at
    1/``downscale`` size.
    """

    role: str
    strength: float = 1.0
    frame: int = 0
    n_frames: int = 1
    before: int = 1
    latent_frames: int = 1
    downscale: int = 1


def check(cap: Capture, plan: list, tol: float = 1e-3) -> None:
    """Raise AssertionError naming the first way ``cap`` departs from ``plan``; nothing unplanned may be there."""
    F, H, W = cap.clip_shape
    canvas_h, canvas_w = cap.canvas
    clip = cap.clip_frames()
    pinned: dict = {}
    for e in plan:
        if e.role == "extension":
            for k in range((e.n_frames - 1) // STRIDE + 1):
                pinned[k] = e.strength
    for k in range(F):
        want, got = pinned.get(k, 0.0), clip.get(k)
        if got is None or isinstance(got, tuple) or abs(got - want) > tol:
            lo = 0 if k == 0 else STRIDE * k - STRIDE + 1
            raise AssertionError(f"clip latent frame {k} (pixel frames {lo}..{STRIDE * k}) has strength {got}, "
                                 f"the plan wants {want}\n{cap.table()}")
    groups = list(cap.appended())

    def spans_canvas(g: Group, what: str, downscale: int = 1) -> None:
        """A frame's worth of tokens at 1/``downscale`` size, covering the whole frame."""
        if g.h_extent != canvas_h or g.w_extent != canvas_w:
            raise AssertionError(f"{what} covers h {g.h_extent} w {g.w_extent}, not the frame {canvas_h} x {canvas_w}")
        want = (H // downscale) * (W // downscale)
        if g.n_tokens != want:
            raise AssertionError(f"{what} has {g.n_tokens} tokens, a 1/{downscale} size frame has {want}")

    for e in plan:
        if e.role == "keyframe":
            latent = 0 if e.frame == 0 else (e.frame - 1) // STRIDE + 1
            assert latent > 0, "a keyframe at frame 0 overwrites the first latent frame: plan it as an extension"
            t0 = (latent - 1) * STRIDE + 1
            match = [g for g in groups if abs(g.t0 - t0) < tol and abs(g.t1 - (t0 + 1)) < tol]
            if not match:
                raise AssertionError(f"no keyframe tokens at pixel frame {t0} (latent {latent}); appended: "
                                     f"{[(g.t0, g.t1, g.strength) for g in groups]}")
            g = match[0]
            if abs(g.strength - e.strength) > tol:
                raise AssertionError(f"keyframe at pixel frame {t0} has strength {g.strength}, the plan wants "
                                     f"{e.strength}")
            spans_canvas(g, f"keyframe at pixel frame {t0}")
            groups.remove(g)
        elif e.role == "memory":
            t0 = -e.before * STRIDE
            match = [g for g in groups if abs(g.t0 - t0) < tol]
            if not match:
                raise AssertionError(f"no context memory at pixel frame {t0} ({e.before} slots before the clip); "
                                     f"appended: {[(g.t0, g.t1, g.strength) for g in groups]}")
            g = match[0]
            if g.t1 > 0:
                raise AssertionError(f"memory tokens reach into the clip: [{g.t0}, {g.t1})")
            if abs(g.strength - e.strength) > tol:
                raise AssertionError(f"memory at pixel frame {t0} has strength {g.strength}, the plan wants "
                                     f"{e.strength}")
            spans_canvas(g, f"memory at pixel frame {t0}", e.downscale)
            groups.remove(g)
        elif e.role == "reference":
            spans = [(0.0, 1.0)] + [(STRIDE * k - STRIDE + 1.0, STRIDE * k + 1.0) for k in range(1, e.latent_frames)]
            for lo, hi in spans:
                match = [g for g in groups if abs(g.t0 - lo) < tol and abs(g.t1 - hi) < tol
                         and abs(g.strength - e.strength) < tol]
                if not match:
                    raise AssertionError(f"no reference tokens on [{lo:g}, {hi:g}) with strength {e.strength}; "
                                         f"appended: {[(g.t0, g.t1, g.strength) for g in groups]}")
                spans_canvas(match[0], f"reference tokens [{lo:g}, {hi:g})", e.downscale)
                g = match[0]
                groups.remove(g)
    if groups:
        raise AssertionError(f"unplanned appended tokens: {[(g.t0, g.t1, g.strength, g.n_tokens) for g in groups]}")
