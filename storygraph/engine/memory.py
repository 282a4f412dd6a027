"""Story memory maths: story clock, decay across transitions and of appearances, reinforcement, retrieval score.

Pure functions, no I/O. Every constant comes from :class:`~storygraph.domain.MemoryParams`.

- story clock: ``child.clock = parent.clock + gap``; the gap defaults by transition kind (continuous 1,
  cut 2, time skip 10) and a transition may override it;
- transition retention: ``decay = exp(-gap / tau_story)``;
- appearance retention at a scene: ``R = exp(-max(0, clock - reinforced_clock) / (tau_c * strength))``;
  stronger memories fade more slowly; ``tau_c`` is the character's own ``decay_tau`` or ``tau_character``;
- strength has one meaning: how slowly a memory fades. An appearance is formed with
  ``strength_init · identity`` (clipped to [strength_min, strength_max]) at its scene's clock, and that is what the
  graph stores (``Appearance.strength``, and ``APPEARS_IN.strength`` of the take that continues the timeline);
- its strength *at a scene* is derived from the uses the scene's own ancestors made of it
  (:func:`strength_on_timeline`): each use whose scene kept the character's identity (identity score at or above
  ``reinforce_threshold``) adds ``reinforce_step`` (capped at ``strength_max``) and refreshes the memory to that
  scene's clock; a use whose scene drifted (identity below ``drift_threshold``) removes ``penalty_step`` (floored at
  ``strength_min``); in between nothing changes. Nothing a sibling branch did enters, so what a timeline remembers
  does not depend on the order its branches were generated in;
- retrieval score: ``w_relevance·norm(rel) + w_recency·norm(R) + w_quality·norm(quality)``, each term min-max
  normalised over the candidates (:func:`score_terms` gives the three parts, which add up to the score), with
  ``rel = a·text cosine + (1 - a)·identity similarity`` (``a = relevance_text_weight``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..domain import DEFAULT_GAPS, MemoryParams, TRANSITION_KINDS
from ..timeline import place_scenes, transition_decay

__all__ = [
    "DEFAULT_GAPS", "gap_for", "story_clock", "transition_decay", "place_scenes", "tau_for", "retention",
    "initial_strength", "reinforce", "penalise", "update_strength", "strength_on_timeline", "relevance", "minmax",
    "score_terms", "retrieval_scores", "shown_terms", "rank_order",
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


def strength_on_timeline(strength: float, reinforced_clock: float, uses: Sequence[tuple[float, Optional[float]]],
                         params: MemoryParams) -> tuple[float, float]:
    """``(strength, reinforced_clock)`` of a memory at a scene: as formed, then moved by each ``(clock, identity)``
    use made by the scene's ancestors, oldest first (:func:`update_strength` per use; a use with no identity
    measured leaves it as it was)."""
    s, c = float(strength), float(reinforced_clock)
    for clock, identity in uses:
        if identity is not None:
            s, c = update_strength(s, c, identity, clock, params)
    return s, c


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


def score_terms(relevance_values, retention_values, quality_values, params: MemoryParams) -> np.ndarray:
    """The three parts of the retrieval score per candidate, shape (n, 3): ``w_relevance·norm(relevance)``,
    ``w_recency·norm(retention)``, ``w_quality·norm(quality)``."""
    return np.stack([params.w_relevance * minmax(relevance_values), params.w_recency * minmax(retention_values),
                     params.w_quality * minmax(quality_values)], axis=-1)


def retrieval_scores(relevance_values, retention_values, quality_values, params: MemoryParams) -> np.ndarray:
    """``w_relevance·norm(relevance) + w_recency·norm(retention) + w_quality·norm(quality)``: the sum of
    :func:`score_terms`."""
    return score_terms(relevance_values, retention_values, quality_values, params).sum(axis=-1)


def shown_terms(terms: Sequence[float], digits: int = 2) -> tuple[str, list[str]]:
    """A score and its parts as text with ``digits`` decimals, rounded so that the shown parts add up to the shown
    score (largest remainder): ``shown_terms([1/3, 1/3, 1/3])`` is ``("1.00", ["0.34", "0.33", "0.33"])``."""
    unit = 10 ** digits
    total = int(round(sum(float(t) for t in terms) * unit))
    scaled = [float(t) * unit for t in terms]
    parts = [int(np.floor(x)) for x in scaled]
    short = total - sum(parts)  # whole units the floors left out (negative only with negative weights)
    order = sorted(range(len(parts)), key=lambda i: (-(scaled[i] - parts[i]), i))
    for k in range(abs(short)):
        i = order[k % len(order)] if short > 0 else order[-1 - k % len(order)]
        parts[i] += 1 if short > 0 else -1
    fmt = lambda n: f"{n / unit:.{digits}f}"  # noqa: E731
    return fmt(total), [fmt(n) for n in parts]


def rank_order(scores, retention_values, strength, reinforced_clock, ids: Sequence[str]) -> list[int]:
    """Candidate positions best first: by score, then retention, strength, reinforced clock (higher first),
    then id, so equal scores always rank the same way."""
    keys = [(-float(scores[i]), -float(retention_values[i]), -float(strength[i]), -float(reinforced_clock[i]),
             ids[i]) for i in range(len(ids))]
    return sorted(range(len(ids)), key=keys.__getitem__)
