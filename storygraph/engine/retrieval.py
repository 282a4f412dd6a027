"""Nearest prior appearances: which earlier frames of a character a scene leans on, and why.

For one scene and one character:

1. candidates — the vector indexes (restricted to the character and to the scene's timeline) give the
   appearances nearest to the scene's CLIP text query and to the character's DINOv2 identity reference
   (the given reference embedding, or else the character's first accepted appearance on this timeline),
   plus the most recent ones on the timeline, so a fresh memory is always considered;
2. graph context — strength and clock as formed, identity score, frame path and placement come from the
   graph (the source of truth); a candidate whose placement there is not an ancestor of the scene is dropped;
3. drift guard — any candidate whose identity score (the one the studio shows for it) is below
   ``drift_threshold`` is dropped, whatever else it has going for it;
4. memory on this timeline — the uses of each survivor (``Appearance.uses``, read with it) by the scene's
   ancestors give its strength and reinforced clock here (``memory.strength_on_timeline``); where the using scenes
   sit is one primary-key read; uses on other branches do not count;
5. score — ``memory.score_terms`` over the survivors (relevance, retention, quality, each min-max
   normalised; the parts add up to the score), ranked with ``memory.rank_order``.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from ..domain import Candidate, MemoryParams, Placement
from . import memory
from .arrays import l2_normalize


class Retriever:
    """Retrieval over one story: its store and its CLIP and DINOv2 vector indexes."""

    def __init__(self, store, clip_index, dino_index, params: Optional[MemoryParams] = None):
        self.store = store
        self.clip = clip_index
        self.dino = dino_index
        self.params = params or MemoryParams()
        self._taus: Optional[dict] = None

    def _character_tau(self, character_id: str) -> Optional[float]:
        if self._taus is None or character_id not in self._taus:
            self._taus = {c.id: c.decay_tau for c in self.store.characters()}
        return self._taus.get(character_id)

    def identity_reference(self, placement: Placement, character_id: str) -> Optional[tuple[str, np.ndarray]]:
        """The character's first accepted appearance on this timeline and its DINOv2 embedding, if any."""
        first = self.dino.first(character_id, placement)
        if first is None:
            return None
        present, vec = self.dino.vectors([first])
        return (first, vec[0]) if present[0] else None

    def nearest_prior_appearances(self, scene, character_id: str, k: int = 1, *,
                                  text_query: Optional[np.ndarray] = None, identity_ref: Optional[np.ndarray] = None,
                                  params: Optional[MemoryParams] = None, tau_character: Optional[float] = None,
                                  exact: bool = False) -> list[Candidate]:
        """Up to ``k`` prior appearances of ``character_id`` on ``scene``'s timeline, best first.

        ``scene``: a ``SceneRecord`` or its ``Placement``. ``text_query``: the CLIP text embedding of the scene's
        character, action and environment. ``identity_ref``: the DINOv2 embedding of the character's reference
        image; ``None`` uses the character's first accepted appearance on this timeline. ``tau_character``
        overrides the character's ``decay_tau`` (read from the graph otherwise). ``exact`` forces exact vector
        search (to measure the approximate path against).
        """
        p = params or self.params
        placement: Placement = scene if isinstance(scene, Placement) else scene.placement
        if k <= 0:
            return []
        tau = memory.tau_for(tau_character if tau_character is not None else self._character_tau(character_id), p)
        if identity_ref is None:
            first = self.identity_reference(placement, character_id)
            if first is None:
                return []
            ref = l2_normalize(np.ravel(first[1]))
        else:
            ref = l2_normalize(np.ravel(identity_ref))
        tq = None if text_query is None else l2_normalize(np.ravel(text_query))

        # 1. candidates from both spaces and the timeline's latest
        pool = p.candidates
        ids: list[str] = list(self.dino.search(character_id, ref, pool, placement, exact=exact)[0])
        if tq is not None:
            ids += self.clip.search(character_id, tq, pool, placement, exact=exact)[0]
        ids += self.dino.recent(character_id, placement, max(1, pool // 4))
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []

        # exact similarities in double precision: equal memories score exactly equal
        has_dino, dino = self.dino.vectors(ids)
        identity = dino.astype(np.float64) @ ref.astype(np.float64)
        keep = has_dino.copy()
        text = None
        if tq is not None:
            has_clip, clip = self.clip.vectors(ids)
            text = clip.astype(np.float64) @ tq.astype(np.float64)
            keep &= has_clip
        else:
            clip = None
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            return []

        # 2. graph context, 3. the drift guard (on the identity score users see)
        wanted = [ids[i] for i in idx]
        apps = {a.id: a for a in self.store.appearances(ids=wanted, with_vectors=False)}
        rows = [i for i in idx if ids[i] in apps and apps[ids[i]].character_id == character_id
                and placement.has_ancestor(apps[ids[i]].branch, apps[ids[i]].pos)
                and apps[ids[i]].identity_score >= p.drift_threshold]
        if not rows:
            return []
        found = [apps[ids[i]] for i in rows]
        rows = np.asarray(rows)

        # 4. strength and reinforced clock on this timeline, from the uses its scenes made of each memory
        uses = self._uses_on_timeline(placement, found)
        formed = [(a.strength, a.reinforced_clock) for a in found]
        here = [memory.strength_on_timeline(s, c, uses.get(a.id, ()), p) for a, (s, c) in zip(found, formed)]

        # 5. score and rank
        ident = identity[rows].astype(np.float64)
        rel = memory.relevance(None if text is None else text[rows], ident, p)
        strength = np.array([s for s, _ in here], dtype=np.float64)
        reinforced = np.array([c for _, c in here], dtype=np.float64)
        ret = memory.retention(placement.clock, reinforced, strength, tau)
        ret = np.atleast_1d(ret)
        quality = np.array([a.identity_score for a in found], dtype=np.float64)
        terms = memory.score_terms(rel, ret, quality, p)
        scores = terms.sum(axis=1)
        order = memory.rank_order(scores, ret, strength, reinforced, [a.id for a in found])
        out = []
        for j in order[:k]:
            a = found[j]
            a.dino = dino[rows[j]].tolist()
            if clip is not None:
                a.clip = clip[rows[j]].tolist()
            else:
                _, cv = self.clip.vectors([a.id])
                a.clip = cv[0].tolist() if cv.shape[1] else []
            out.append(Candidate(appearance=a, score=float(scores[j]), relevance=float(rel[j]),
                                 retention=float(ret[j]), quality=float(quality[j]), identity=float(ident[j]),
                                 terms=tuple(float(x) for x in terms[j]), strength=float(strength[j]),
                                 reinforced_clock=float(reinforced[j]), uses=len(uses.get(a.id, ()))))
        return out

    def _uses_on_timeline(self, placement: Placement, apps: list) -> dict[str, list[tuple[float, Optional[float]]]]:
        """``appearance id -> [(clock, identity), ...]``: the uses of each memory by the scene's ancestors, in
        timeline order (a use on a sibling branch, or by the scene itself, is not on this timeline)."""
        users = {sid for a in apps for sid, _ in a.uses}
        if not users:
            return {}
        where = self.store.scene_placements(users)
        segments = {b: i for i, (b, _) in enumerate(placement.lineage)}
        segments[placement.branch] = len(placement.lineage)
        out: dict[str, list] = {}
        for a in apps:
            for sid, identity in a.uses:
                if sid not in where:
                    continue
                clock, branch, pos = where[sid]
                if placement.has_ancestor(branch, pos):
                    out.setdefault(a.id, []).append((segments[branch], pos, clock, identity))
        return {aid: [(clock, identity) for _, _, clock, identity in sorted(us)] for aid, us in out.items()}


def nearest_prior_appearances(store, clip_index, dino_index, scene: Union[Placement, object], character_id: str,
                              k: int = 1, *, text_query: Optional[np.ndarray] = None,
                              identity_ref: Optional[np.ndarray] = None, params: Optional[MemoryParams] = None,
                              tau_character: Optional[float] = None) -> list[Candidate]:
    """Function form of :meth:`Retriever.nearest_prior_appearances`."""
    return Retriever(store, clip_index, dino_index, params).nearest_prior_appearances(
        scene, character_id, k, text_query=text_query, identity_ref=identity_ref, tau_character=tau_character)
