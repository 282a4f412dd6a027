"""Story memory maths: story clock, decay across transitions and of appearances, reinforcement, retrieval score.

Pure functions, no I/O. Every constant comes from :class:`~storygraph.domain.MemoryParams`.

- story clock: ``child.clock = parent.clock + gap``; the gap defaults by transition kind (continuous 1,
  cut 2, time skip 10) and a transition may override it;
- transition retention: ``decay = exp(-gap / tau_story)``;
- appearance retention at a scene: ``R = exp(-max(0, clock - reinforced_clock) / (tau_c * strength))``;
  stronger memories fade more slowly; ``tau_c`` is the character's own ``decay_tau`` or ``tau_character``;
- a memory reused as conditioning gains ``reinforce_step`` strength (capped at ``strength_max``) and is
  refreshed to the scene's clock when the scene kept the character's identity (identity score at or above
  ``reinforce_threshold``); it loses ``penalty_step`` (floored at ``strength_min``) when the scene drifted
  (identity below ``drift_threshold``); in between nothing changes;
- retrieval score: ``w_relevance·rel + w_recency·R + w_quality·quality``, each term min-max normalised over
  the candidates, with ``rel = a·text cosine + (1 - a)·identity similarity`` (``a = relevance_text_weight``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..domain import DEFAULT_GAPS, MemoryParams, TRANSITION_KINDS
from ..timeline import place_scenes, transition_decay

__all__ = [
    "DEFAULT_GAPS", "gap_for", "story_clock", "transition_decay", "place_scenes", "tau_for", "retention",
    "initial_strength", "reinforce", "penalise", "update_strength", "relevance", "minmax", "retrieval_scores",
    "rank_order",
]


def gap_for(kind: str, gap: Optional[float] = None) -> float:
    """Story time across a transition: ``gap`` when given, else the default of its kind."""
    if kind not in TRANSITION_KINDS:
        raise ValueError(f"unknown transition kind {kind!r}; expected one of {', '.join(TRANSITION_KINDS)}")
    if gap is None:
        return DEFAULT_GAPS[kind]
    gap = float(gap)
    if not math.isfinite(gap) or gap < 0:
        raise ValueError(f"a transition gap must be a finite number >= 0, not {gap!r}")
    return gap


def story_clock(parent_clock: float, kind: str, gap: Optional[float] = None) -> float:
    """The clock of a scene reached from a parent at ``parent_clock`` through a transition of ``kind``."""
    return float(parent_clock) + gap_for(kind, gap)


def tau_for(decay_tau: Optional[float], params: MemoryParams) -> float:
    """A character's memory time constant: its own ``decay_tau`` when set and positive, else the default."""
    if decay_tau is not None and math.isfinite(float(decay_tau)) and float(decay_tau) > 0:
        return float(decay_tau)
    return float(params.tau_character)


def retention(clock, reinforced_clock, strength, tau: float):
    """``exp(-max(0, clock - reinforced_clock) / (tau * strength))``; scalars or numpy arrays.

    The elapsed time is clamped at 0: a memory refreshed later in story time (on another branch) is as
    fresh as can be, never fresher than new (R <= 1).
    """
    elapsed = np.maximum(np.asarray(clock, dtype=np.float64) - np.asarray(reinforced_clock, dtype=np.float64), 0.0)
    denom = float(tau) * np.maximum(np.asarray(strength, dtype=np.float64), 1e-9)
    out = np.exp(-elapsed / denom)
    return float(out) if out.ndim == 0 else out


def initial_strength(identity_score: float, params: MemoryParams) -> float:
    """A new appearance's strength: ``strength_init * identity_score`` clipped to [strength_min, strength_max]."""
    s = float(params.strength_init) * float(identity_score)
    if not math.isfinite(s):
        s = params.strength_min
    return float(min(max(s, params.strength_min), params.strength_max))


def reinforce(strength: float, params: MemoryParams) -> float:
    return float(min(float(strength) + params.reinforce_step, params.strength_max))


def penalise(strength: float, params: MemoryParams) -> float:
    return float(max(float(strength) - params.penalty_step, params.strength_min))


def update_strength(strength: float, reinforced_clock: float, identity: float, clock: float,
                    params: MemoryParams) -> tuple[float, float]:
    """New ``(strength, reinforced_clock)`` of a memory reused by a scene at ``clock`` whose identity score
    for the memory's character was ``identity``.

    Good reuse (identity >= reinforce_threshold) reinforces and refreshes the memory to the scene's clock
    (never moving it back in story time); drift (identity < drift_threshold) penalises it; anything between
    leaves it as it was.
    """
    identity = float(identity)
    if identity >= params.reinforce_threshold:
        return reinforce(strength, params), float(max(float(reinforced_clock), float(clock)))
    if identity < params.drift_threshold:
        return penalise(strength, params), float(reinforced_clock)
    return float(strength), float(reinforced_clock)


def relevance(text_cosine, identity_similarity, params: MemoryParams):
    """``a * text cosine + (1 - a) * identity similarity``; identity alone when there is no text query."""
    ident = np.asarray(identity_similarity, dtype=np.float64)
    if text_cosine is None:
        return ident
    a = float(params.relevance_text_weight)
    return a * np.asarray(text_cosine, dtype=np.float64) + (1.0 - a) * ident


def minmax(values) -> np.ndarray:
    """``(v - min) / (max - min)`` over the candidates; a term that does not separate them (all equal) is 1."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.ones_like(v)
    return (v - lo) / (hi - lo)


def retrieval_scores(relevance_values, retention_values, quality_values, params: MemoryParams) -> np.ndarray:
    """``w_relevance·norm(relevance) + w_recency·norm(retention) + w_quality·norm(quality)``."""
    return (params.w_relevance * minmax(relevance_values) + params.w_recency * minmax(retention_values)
            + params.w_quality * minmax(quality_values))


def rank_order(scores, retention_values, strength, reinforced_clock, ids: Sequence[str]) -> list[int]:
    """Candidate positions best first: by score, then retention, strength, reinforced clock (higher first),
    then id, so equal scores always rank the same way."""
    keys = [(-float(scores[i]), -float(retention_values[i]), -float(strength[i]), -float(reinforced_clock[i]),
             ids[i]) for i in range(len(ids))]
    return sorted(range(len(ids)), key=keys.__getitem__)
