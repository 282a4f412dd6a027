"""Training-set export for the LTX-2 trainer (``ltx-trainer``), filtered by score thresholds.

Writes ``<out>/dataset.json`` — a list of ``{"caption", "media_path"}`` entries, the format its
``process_dataset.py`` reads (``--caption-column caption --video-column media_path``) — with the videos
copied under ``<out>/videos/``. With ``ic_lora=True`` each entry that has a parent scene also gets
``reference_path``: the parent's video, so a video-to-video (IC-LoRA) run learns "continue this clip"
(``--reference-column reference_path``). Beside it, ``scores.json`` holds every entry's scores and
provenance, and ``embeddings.npz`` the CLIP and DINOv2 embeddings of the characters' appearances.

Accepted takes are the ones that continue the timeline (the chosen take of each done scene). Media paths in the
graph are relative to the story folder (``story_dir``), so a moved or copied story exports its own files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..mediapaths import resolve


@dataclass(frozen=True)
class ExportFilter:
    min_identity: Optional[float] = None
    min_text_alignment: Optional[float] = None
    min_subject_consistency: Optional[float] = None
    min_transition_smoothness: Optional[float] = None

    def accepts(self, scores) -> tuple[bool, str]:
        for name in ("identity", "text_alignment", "subject_consistency", "transition_smoothness"):
            limit = getattr(self, f"min_{name}")
            value = getattr(scores, name)
            if limit is not None and value is not None and value < limit:
                return False, f"{name} {value:.3f} < {limit}"
        return True, ""


def export_ltx_trainer(store, out_dir, filters: ExportFilter = ExportFilter(), ic_lora: bool = False,
                       story_dir=None) -> dict:
    """Write the training set of ``store``'s story to ``out_dir``; ``story_dir``: the folder its media paths are
    relative to (default: the embedded store's own folder)."""
    import numpy as np

    story_dir = story_dir if story_dir is not None else getattr(store, "path", None)

    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    scenes = {s.id: s for s in store.scenes()}
    entries, details, skipped = [], [], []
    emb_ids, clip, dino = [], [], []
    copied: dict[str, str] = {}

    def copy(scene) -> str:
        if scene.id not in copied:
            dest = videos / f"{scene.id}.mp4"
            shutil.copyfile(resolve(story_dir, scene.video_path), dest)
            copied[scene.id] = str(dest.relative_to(out))
        return copied[scene.id]

    for scene in scenes.values():
        video = resolve(story_dir, scene.video_path)
        if scene.status != "done" or video is None or not video.is_file():
            continue
        ok, why = filters.accepts(scene.scores)
        if not ok:
            skipped.append({"scene": scene.id, "why": why})
            continue
        entry = {"caption": scene.prompt, "media_path": copy(scene)}
        parent = scenes.get(scene.placement.parent_id) if scene.placement.parent_id else None
        if ic_lora:
            if parent is None or parent.status != "done" or not parent.video_path or \
                    not resolve(story_dir, parent.video_path).is_file():
                skipped.append({"scene": scene.id, "why": "no generated parent to use as reference"})
                continue
            entry["reference_path"] = copy(parent)
        entries.append(entry)
        details.append({"scene": scene.id, "take": scene.chosen_take, "media_path": entry["media_path"],
                        "scores": scene.scores.as_dict(),
                        "conditioned_on": [asdict(c) for c in store.conditioned_on(scene.id)]})
        for a in store.appearances(scene_id=scene.id):
            emb_ids.append(a.id)
            clip.append(a.clip)
            dino.append(a.dino)
    (out / "dataset.json").write_text(json.dumps(entries, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "scores.json").write_text(json.dumps({"entries": details, "skipped": skipped}, indent=2,
                                                ensure_ascii=False), encoding="utf-8")
    def matrix(rows):
        return np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, 0), np.float32)

    np.savez(out / "embeddings.npz", ids=np.array(emb_ids, dtype=str), clip=matrix(clip), dino=matrix(dino))
    return {"entries": len(entries), "skipped": len(skipped), "dir": str(out)}
