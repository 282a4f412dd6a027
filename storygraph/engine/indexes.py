"""The index keeper: a story's CLIP and DINOv2 vector indexes, kept in step with the graph.

The graph is the source of truth and the indexes are derived (see :mod:`.vectors`). On first use they are
opened from ``<story dir>/vectors`` and reconciled with the graph (whatever the saved files lack is added back,
whatever the graph no longer has is dropped), so a crash between a commit and a save loses nothing. After each
committed scene its accepted appearances are brought in; the files are written every ``index_save_every``
scenes and on close, not after every scene, since a save rewrites a character's whole partition.

Each row also carries its scene's placement (branch, position, clock). An edit that moves scenes to another
timeline rewrites those in the graph; :meth:`IndexKeeper.moving` puts a marker file beside the index before the
graph changes and removes it once the index matches again, so after a crash in between the next open also checks
every row's placement against the graph.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

from ..config import resolve_device
from ..faults import crash_point
from ..graphdb import StoryStore

SPACES = ("clip", "dino")
log = logging.getLogger(__name__)

MOVING_MARKER = ".placements-changing"


@contextmanager
def placements_changing(folder) -> Iterator[dict]:
    """Leave a marker in the index folder while the graph may move scenes: the next open of the index checks every
    row's placement unless the caller settles it (``state["settled"] = True``) or says nothing moved
    (``state["moved"] = False``). A crash leaves the marker, so the check is never skipped."""
    marker = Path(folder) / MOVING_MARKER
    existed = marker.exists()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    state = {"moved": True, "settled": False}
    yield state
    if state["settled"] or (not state["moved"] and not existed):
        marker.unlink(missing_ok=True)


class IndexKeeper:
    def __init__(self, folder: Path, store: StoryStore, device: str = "auto", save_every: int = 25):
        self.folder = Path(folder)
        self.store = store
        self.device_setting = device
        self.save_every = max(1, int(save_every))
        self._indexes: Optional[dict] = None
        self._unsaved = 0  # scenes indexed since the last save

    def is_open(self) -> bool:
        return self._indexes is not None

    def indexes(self) -> dict:
        """``{"clip": VectorIndex, "dino": VectorIndex}``, opened and reconciled with the graph on first use."""
        if self._indexes is None:
            from .vectors import VectorIndex, reconcile_all

            device = resolve_device(self.device_setting)
            indexes = {space: VectorIndex.open(self.folder, space, device=device) for space in SPACES}
            moved = self._marker.exists()
            reconcile_all(self.store, indexes, check_placement=moved)  # one read of the graph for both spaces
            self._indexes = indexes
            if moved:
                self.save()
                self._marker.unlink(missing_ok=True)
        return self._indexes

    @property
    def _marker(self) -> Path:
        return self.folder / MOVING_MARKER

    @contextmanager
    def moving(self) -> Iterator[dict]:
        """Around a graph edit that may move scenes between timelines: afterwards every row's placement is read
        again from the graph (now, if the index is open; else on its first use). The edit may say it moved
        nothing by setting ``moved`` to False in the dict this yields."""
        with placements_changing(self.folder) as state:
            yield state
            if state["moved"] and self._indexes is not None:
                from .vectors import reconcile_all

                reconcile_all(self.store, self._indexes, check_placement=True)
                self.save()
                state["settled"] = True

    def remove(self, ids: Iterable[str]) -> None:
        """Drop appearances the graph no longer has (a deleted scene's), now if the index is open."""
        ids = list(ids)
        if ids and self._indexes is not None:
            for index in self._indexes.values():
                index.remove(ids)
            self.save()

    def update_scene(self, scene_id: str) -> None:
        """Bring the indexes in line with the graph for one scene: its accepted appearances in, the others out."""
        apps = self.store.appearances(scene_id=scene_id, with_vectors=True, accepted_only=False)
        keep = [a for a in apps if a.accepted]
        drop = [a.id for a in apps if not a.accepted]
        for index in self.indexes().values():
            index.remove(drop)
            index.add(keep)
        self._unsaved += 1
        if self._unsaved >= self.save_every:
            try:
                self.save()
            except OSError as e:  # the scene is committed; the graph fills the index's gap on the next open
                log.info("vector index not saved (%s); the graph is intact and the next open fills the gap", e)
        crash_point("after_index")

    def save(self) -> None:
        """Write the indexes to disk now (nothing to do when they were never opened)."""
        if self._indexes is not None:
            for index in self._indexes.values():
                index.save()
        self._unsaved = 0
