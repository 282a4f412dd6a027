"""Story time and timelines: clocks and branch placement of scenes from their transitions (pure).

``scene.clock = parent.clock + gap``. A scene's first outgoing transition (in story-file order)
continues its parent's branch; every further one starts a new branch named after the child scene.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from typing import Iterable, Optional

from .domain import Placement, Transition
from .errors import InvalidInput


class TimelineError(InvalidInput, ValueError):
    """Transitions that do not make a forest of timelines (a cycle, or a scene reached twice)."""

    def __init__(self, message: str, scene_id: Optional[str] = None):
        super().__init__(message)
        self.scene_id = scene_id


def transition_decay(gap: float, tau_story: float) -> float:
    """Retention across a transition: ``exp(-gap / tau_story)``."""
    return math.exp(-float(gap) / float(tau_story))


def find_cycle(scene_ids: Iterable[str], transitions: Iterable[Transition]) -> Optional[list[str]]:
    """A list of scene ids forming a cycle along transitions, or None."""
    children = defaultdict(list)
    for t in transitions:
        children[t.from_id].append(t.to_id)
    state: dict[str, int] = {}
    for start in scene_ids:
        if start in state:
            continue
        stack = [(start, iter(children[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(children[nxt])))
    return None


def child_placement(parent: Placement, child_id: str, gap: float, continues_branch: bool) -> Placement:
    if continues_branch:
        return Placement(child_id, parent.clock + gap, parent.branch, parent.pos + 1, parent.scene_id, parent.lineage)
    return Placement(
        child_id, parent.clock + gap, child_id, 0, parent.scene_id,
        parent.lineage + ((parent.branch, parent.pos),),
    )


def place_scenes(scene_ids: list[str], transitions: list[Transition]) -> dict[str, Placement]:
    """Placement of every scene. Scenes must form a forest: at most one incoming transition each, no cycle."""
    parents: dict[str, Transition] = {}
    children: dict[str, list[Transition]] = defaultdict(list)
    for t in transitions:
        if t.to_id in parents:
            raise TimelineError(
                f"scene {t.to_id!r} has two incoming transitions (from {parents[t.to_id].from_id!r} and "
                f"{t.from_id!r}); timelines branch but never merge", t.to_id)
        parents[t.to_id] = t
        children[t.from_id].append(t)
    cycle = find_cycle(scene_ids, transitions)
    if cycle:
        raise TimelineError("transitions form a cycle: " + " -> ".join(cycle), cycle[0])
    out: dict[str, Placement] = {}
    queue = deque(Placement(s, 0.0, s, 0) for s in scene_ids if s not in parents)
    while queue:
        p = queue.popleft()
        out[p.scene_id] = p
        for i, t in enumerate(children[p.scene_id]):
            queue.append(child_placement(p, t.to_id, t.effective_gap, continues_branch=(i == 0)))
    return out


def timeline_order(placements: dict[str, Placement]) -> list[str]:
    """Scene ids so that every parent precedes its children: by clock, then branch depth, then id order."""
    return [p.scene_id for p in sorted(placements.values(), key=lambda p: (p.clock, len(p.lineage), p.pos))]
