"""Story time and timelines: clocks and branch placement of scenes from their transitions (pure).

``scene.clock = parent.clock + gap``. A scene's first outgoing transition (in story-file order)
continues its parent's branch; every further one starts a new branch named after the child scene.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from typing import Optional

from .domain import MAX_CLOCK, Placement, Transition
from .errors import InvalidInput


class TimelineError(InvalidInput, ValueError):
    """Transitions that do not make a forest of timelines (a cycle, or a scene reached twice)."""

    def __init__(self, message: str, scene_id: Optional[str] = None, cycle: Optional[list[str]] = None):
        super().__init__(message)
        self.scene_id = scene_id
        self.cycle = cycle


def transition_decay(gap: float, tau_story: float) -> float:
    """Retention across a transition: ``exp(-gap / tau_story)``."""
    return math.exp(-float(gap) / float(tau_story))


def child_placement(parent: Placement, child_id: str, gap: float, continues_branch: bool) -> Placement:
    """The place of a child scene: one step further on the parent's branch, or the start of a new branch named
    after the child (its lineage shares the parent's, one link longer: O(1) per scene)."""
    if continues_branch:
        return Placement(child_id, parent.clock + gap, parent.branch, parent.pos + 1, parent.scene_id, parent.lineage)
    return Placement(child_id, parent.clock + gap, child_id, 0, parent.scene_id,
                     parent.lineage.then(parent.branch, parent.pos))


def place_scenes(scene_ids: list[str], transitions: list[Transition]) -> dict[str, Placement]:
    """Placement of every scene. Scenes must form a forest: at most one incoming transition each, no cycle
    (a :class:`TimelineError` says which scene has two, or lists the cycle in ``cycle``).

    One pass, O(scenes + transitions) in time and memory, however deep the branching."""
    parents: dict[str, Transition] = {}
    children: dict[str, list[Transition]] = defaultdict(list)
    for t in transitions:
        if t.to_id in parents:
            raise TimelineError(
                f"scene {t.to_id!r} has two incoming transitions (from {parents[t.to_id].from_id!r} and "
                f"{t.from_id!r}); timelines branch but never merge", t.to_id)
        parents[t.to_id] = t
        children[t.from_id].append(t)
    out: dict[str, Placement] = {}
    queue = deque(Placement(s, 0.0, s, 0) for s in scene_ids if s not in parents)
    while queue:
        p = queue.popleft()
        out[p.scene_id] = p
        for i, t in enumerate(children.get(p.scene_id, ())):
            queue.append(child_placement(p, t.to_id, t.effective_gap, continues_branch=(i == 0)))
    if len(out) < len(set(scene_ids) | set(parents)):
        # every scene not reached from a root has a parent: following parents from one must come round
        cycle = _cycle_above(next(s for s in (*scene_ids, *parents) if s not in out), parents, scene_ids)
        raise TimelineError("transitions form a cycle: " + " -> ".join(cycle), cycle[0], cycle)
    return out


def _cycle_above(scene_id: str, parents: dict[str, Transition], order: list[str]) -> list[str]:
    """The cycle reached by following parents up from ``scene_id``, as ``[a, b, ..., a]`` along the transitions,
    starting at the member that comes first in ``order``."""
    seen: set = set()
    s = scene_id
    while s not in seen:
        seen.add(s)
        s = parents[s].from_id
    members = [s]
    t = parents[s].from_id
    while t != s:
        members.append(t)
        t = parents[t].from_id
    on = set(members)
    succ = {parents[m].from_id: m for m in members}
    start = next((x for x in order if x in on), members[0])
    cycle = [start]
    while len(cycle) <= len(members):
        cycle.append(succ[cycle[-1]])
    return cycle


def timeline_order(placements: dict[str, Placement]) -> list[str]:
    """Scene ids so that every parent precedes its children: by clock, then branch depth, then id order."""
    return [p.scene_id for p in sorted(placements.values(), key=lambda p: (p.clock, len(p.lineage), p.pos))]


def late_clock(placements: dict[str, Placement], limit: float = MAX_CLOCK) -> Optional[Placement]:
    """The first placement whose clock is past ``limit`` (or not a finite number), or None."""
    for p in placements.values():
        if not p.clock <= limit:  # NaN compares false
            return p
    return None
