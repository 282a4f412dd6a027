"""``storygraph check``: whether a story folder's graph, vector index and media agree, and repairs of what can be.

The graph is the source of truth; the vector index is derived from it and the media are what it points at. A
missing file is a state, never a crash: a done scene whose chosen video is gone becomes ``stale`` ("media missing")
and is made again by ``run``; an appearance whose frame is gone is skipped by retrieval, and its frame can be cut
again from its take's video. :func:`inspect` only reads (it runs on a read-only store); :func:`repair` takes an
open :class:`~storygraph.engine.engine.StoryEngine` and fixes what :func:`inspect` found, where it can.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .. import mediapaths
from ..ripple import Cause
from ..timeline import place_scenes

#: Findings that describe a state the engine handles (``resume`` makes them again), not an inconsistency.
NOTES = ("stale", "interrupted")


@dataclass
class Finding:
    kind: str  # stale | interrupted | generating | absolute-paths | missing-video | missing-take-video |
    # missing-frame | index | placements | memory-uses | two-parents | orphan-media
    what: str  # the scene, appearance or folder concerned
    detail: str  # in words
    repairable: bool = False
    repaired: bool = False

    @property
    def problem(self) -> bool:
        """An inconsistency (not a state the engine handles by itself) that is still there."""
        return self.kind not in NOTES and not self.repaired

    def as_dict(self) -> dict:
        return {**asdict(self), "problem": self.problem}


def inspect(store, story_dir) -> list[Finding]:
    """Everything that does not agree in the story folder ``story_dir`` whose graph is ``store`` (read only)."""
    story_dir = Path(story_dir)
    out: list[Finding] = []
    scenes = store.scenes()
    for s in scenes:
        if s.status == "stale":
            out.append(Finding("stale", s.id, s.stale_reason or "stale"))
        elif s.status == "interrupted":
            out.append(Finding("interrupted", s.id, "its generation stopped; resume makes it"))
        elif s.status == "generating":
            out.append(Finding("generating", s.id, "marked generating with no process on it (a crash): it becomes "
                                                   "interrupted when the story is opened for writing",
                               repairable=True))
        paths = [p for p in (s.video_path, s.last_frame_path, s.frames_dir) if mediapaths.is_migratable(story_dir, p)]
        if paths:
            out.append(Finding("absolute-paths", s.id, f"absolute media path {paths[0]} (a moved or older story)",
                               repairable=True))
        if s.status == "done" and s.chosen_take is not None and not mediapaths.exists(story_dir, s.video_path):
            out.append(Finding("missing-video", s.id, f"its chosen video {s.video_path} is missing: it becomes stale "
                                                      "and run makes it again", repairable=True))
        for t in store.takes(s.id) if s.takes else []:
            if t.take != s.chosen_take and not mediapaths.exists(story_dir, t.video_path):
                out.append(Finding("missing-take-video", f"{s.id}#{t.take}",
                                   f"take {t.take}'s video {t.video_path} is missing (it can no longer be chosen)"))
    apps = store.appearances(with_vectors=False, accepted_only=False)
    kept = {(a.id, sid) for a in apps for sid, _ in a.uses}
    made = {(r["target"], r["id"]) for r in store.stale_dependencies() if r["kind"] == "Appearance"}
    if kept != made:
        out.append(Finding("memory-uses", "appearances", f"{len(made - kept)} use(s) of memories missing from their "
                                                          f"lists and {len(kept - made)} too many: rebuilt from the "
                                                          "provenance", repairable=True))
    for a in apps:
        if not a.accepted:
            continue
        if not mediapaths.exists(story_dir, a.frame_path):
            video = mediapaths.resolve(story_dir, str(Path(a.frame_path).parent / "video.mp4"))
            can = video is not None and video.is_file()
            out.append(Finding("missing-frame", a.id,
                               f"remembered frame {a.frame_path} is missing; retrieval skips it"
                               + ("; it can be cut again from its take's video" if can else ""), repairable=can))
    out += _index_findings(store, story_dir)
    parents = defaultdict(list)
    for t in store.transitions():
        parents[t.to_id].append(t.from_id)
    for sid, froms in sorted(parents.items()):
        if len(froms) > 1:
            out.append(Finding("two-parents", sid, f"{len(froms)} incoming transitions (from {', '.join(froms)}); a "
                                                   "scene has one", repairable=True))
    known = {s.id for s in scenes}
    media = story_dir / "media"
    if media.is_dir():
        for d in sorted(media.iterdir()):
            if d.is_dir() and d.name not in known:
                out.append(Finding("orphan-media", str(d.relative_to(story_dir)),
                                   "media of a scene the graph does not have (left alone)"))
    return out


def _index_findings(store, story_dir: Path) -> list[Finding]:
    from .indexes import MOVING_MARKER, SPACES
    from .vectors import VectorIndex

    folder = story_dir / "vectors"
    graph = {aid for aid, _ in store.appearance_keys()}
    out = []
    for space in SPACES:
        try:
            ids = VectorIndex.open(folder, space, device="cpu").ids()
        except Exception as e:  # noqa: BLE001 - an unreadable index is rebuilt from the graph
            out.append(Finding("index", space, f"the {space} index cannot be read ({e}): it is rebuilt from the "
                                               "graph", repairable=True))
            continue
        missing, extra = graph - ids, ids - graph
        if missing or extra:
            out.append(Finding("index", space, f"the saved {space} index lacks {len(missing)} of the graph's "
                                               f"appearances and holds {len(extra)} the graph does not",
                               repairable=True))
    if (folder / MOVING_MARKER).exists():
        out.append(Finding("placements", "vectors", "scenes were being moved when the story last stopped: the "
                                                    "index's placements are checked against the graph",
                           repairable=True))
    return out


def repair(engine, findings: list[Finding]) -> list[Finding]:
    """Fix what ``findings`` (from :func:`inspect` on this engine's story) can have fixed; marks them repaired.
    Opening the engine already made ``generating`` scenes interrupted and media paths relative."""
    by_kind = defaultdict(list)
    for f in findings:
        by_kind[f.kind].append(f)
    for f in by_kind["generating"] + by_kind["absolute-paths"]:
        f.repaired = True  # done by StoryEngine.open
    if by_kind["missing-video"]:
        engine.mark_missing_media()
        for f in by_kind["missing-video"]:
            f.repaired = engine.store.scene(f.what).status == "stale"
    for f in by_kind["missing-frame"]:
        if f.repairable:
            f.repaired = _cut_frame_again(engine, f.what)
    if by_kind["two-parents"]:
        _one_parent_each(engine, by_kind["two-parents"])
    if by_kind["memory-uses"]:
        engine.store.index_memory()
        for f in by_kind["memory-uses"]:
            f.repaired = True
    if by_kind["index"] or by_kind["placements"]:
        engine.indexes()  # reconciled with the graph (and placements checked after an interrupted move)
        engine.save_index()
        for f in by_kind["index"] + by_kind["placements"]:
            f.repaired = True
    return findings


def _cut_frame_again(engine, appearance_id: str) -> bool:
    from . import media

    found = engine.store.appearances(ids=[appearance_id], accepted_only=False, with_vectors=False)
    if not found:
        return False
    a = found[0]
    target = mediapaths.resolve(engine.dir, a.frame_path)
    video = target.parent / media.VIDEO_NAME
    try:
        frames, _ = media.read_video(video)
    except Exception:  # noqa: BLE001 - an unreadable video: nothing to cut from
        return False
    if not 0 <= a.frame_index < len(frames):
        return False
    media.save_image(target, frames[a.frame_index])
    return True


def _one_parent_each(engine, found: list[Finding]) -> None:
    """Keep the transition from the parent the scene's placement names (else the first); drop the others."""
    store = engine.store
    transitions = store.transitions()
    drop = []
    for f in found:
        froms = sorted(t.from_id for t in transitions if t.to_id == f.what)
        scene = store.scene(f.what)
        keep: Optional[str] = scene.placement.parent_id if scene and scene.placement.parent_id in froms else froms[0]
        drop += [(a, f.what) for a in froms if a != keep]
    rest = [t for t in transitions if (t.from_id, t.to_id) not in set(drop)]
    scenes = store.scenes()
    placements = place_scenes([s.id for s in scenes], rest)
    new = {s.id: placements[s.id] for s in scenes if not placements[s.id].same_place(s.placement)}
    changed = {sid: Cause(sid, "moved: its extra incoming transition was removed") for sid in new}
    with engine.index.moving():
        store.set_timeline(delete=drop, placements=new, changed=changed)
    for f in found:
        f.repaired = True
