"""``storygraph compare``: the same scenes under several memory modes, side by side.

For each chosen scene (default: every generated scene with characters) and each mode, the scene is conditioned
in that mode and generated as a new take beside the others — with the chosen take's seed, so the mode is the
only difference — observed and committed without being chosen: the timeline, its memory and its reinforcement
are untouched. A take already made from exactly the same request is reused, so a stopped comparison resumes.

What is compared, per mode: the observer's cross-shot identity (DINOv2 similarity of each character to its
reference and prior appearances), subject and background consistency; and identity per recurrence gap — how
many scenes since the character was last seen on this timeline ("first" when never). ``write`` puts the table
in ``compare.json`` and a chart in ``compare.png``.

With random weights (the tiny models, which carry a marker) the numbers prove the plumbing only; the result
says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..domain import MEMORY_MODES
from .errors import InvalidRequest, NotReady, SceneNotFound

#: Recurrence-gap buckets, in scenes since the character was last seen.
GAP_BUCKETS = (("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6+", 6, math.inf))
RANDOM_NOTE = ("random weights: these numbers show that every mode runs end to end; they say nothing about which "
               "mode keeps identity better")


@dataclass
class ModeTake:
    """One scene generated in one mode."""

    scene_id: str
    mode: str  # what was asked
    used: str  # what the plan did (a mode that cannot apply falls back, see the notes)
    take: int
    seed: int
    reused: bool
    identity: Optional[float]
    subject_consistency: Optional[float]
    background_consistency: Optional[float]
    identity_by_character: dict = field(default_factory=dict)
    gaps: dict = field(default_factory=dict)  # character id -> scenes since last seen (None: first appearance)
    notes: list = field(default_factory=list)


@dataclass
class Comparison:
    modes: list
    takes: list  # list[ModeTake]
    random_weights: bool = False

    @property
    def note(self) -> str:
        return RANDOM_NOTE if self.random_weights else ""

    def by_mode(self) -> dict:
        """mode -> {scenes, identity, subject_consistency, background_consistency} (means over its takes)."""
        out = {}
        for mode in self.modes:
            rows = [t for t in self.takes if t.mode == mode]
            out[mode] = {"scenes": len(rows), **{k: _mean(getattr(t, k) for t in rows)
                                                 for k in ("identity", "subject_consistency", "background_consistency")}}
        return out

    def by_gap(self) -> dict:
        """gap bucket -> mode -> {n, identity}: each character of each take counted once."""
        out: dict = {}
        for label in [b[0] for b in GAP_BUCKETS] + ["first"]:
            out[label] = {}
            for mode in self.modes:
                vals = [t.identity_by_character[c] for t in self.takes if t.mode == mode
                        for c, g in t.gaps.items() if _bucket(g) == label and t.identity_by_character.get(c) is not None]
                out[label][mode] = {"n": len(vals), "identity": _mean(vals)}
        return out

    def as_dict(self) -> dict:
        return {"modes": self.modes, "random_weights": self.random_weights, "note": self.note,
                "by_mode": self.by_mode(), "by_gap": self.by_gap(), "takes": [asdict(t) for t in self.takes]}

    def write(self, out_dir) -> dict:
        """``compare.json`` and ``compare.png`` in ``out_dir``; returns their paths."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        js = out / "compare.json"
        js.write_text(json.dumps(self.as_dict(), indent=2, default=str), encoding="utf-8")
        gaps = self.by_gap()
        labels = [g for g in gaps if any(gaps[g][m]["n"] for m in self.modes)] or list(gaps)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        width = 0.8 / max(1, len(self.modes))
        for i, mode in enumerate(self.modes):
            xs = [j + i * width for j in range(len(labels))]
            ax1.bar(xs, [gaps[g][mode]["identity"] or 0.0 for g in labels], width, label=mode)
        ax1.set_xticks([j + width * (len(self.modes) - 1) / 2 for j in range(len(labels))], labels)
        ax1.set_xlabel("scenes since the character was last seen")
        ax1.set_ylabel("identity (DINOv2 cosine)")
        ax1.legend(fontsize=8)
        summary = self.by_mode()
        keys = ("identity", "subject_consistency", "background_consistency")
        for i, mode in enumerate(self.modes):
            ax2.bar([j + i * width for j in range(len(keys))], [summary[mode][k] or 0.0 for k in keys], width,
                    label=mode)
        ax2.set_xticks([j + width * (len(self.modes) - 1) / 2 for j in range(len(keys))],
                       [k.replace("_", " ") for k in keys], fontsize=8)
        fig.suptitle("memory modes compared" + (" (random weights: plumbing only)" if self.random_weights else ""))
        fig.tight_layout()
        png = out / "compare.png"
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return {"json": str(js), "png": str(png)}


def _mean(values) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def _bucket(gap: Optional[int]) -> str:
    if gap is None:
        return "first"
    for label, lo, hi in GAP_BUCKETS:
        if lo <= gap <= hi:
            return label
    return "first"


def recurrence_gaps(scene, characters: Sequence[str], scenes_by_id: dict) -> dict:
    """character id -> how many scenes back along the timeline it was last seen (None: never before)."""
    out: dict = {}
    for cid in characters:
        steps, pid, found = 0, scene.placement.parent_id, None
        while pid is not None and pid in scenes_by_id:
            steps += 1
            parent = scenes_by_id[pid]
            if cid in parent.spec.characters:
                found = steps
                break
            pid = parent.placement.parent_id
        out[cid] = found
    return out


def random_weights(config, story_dir) -> bool:
    """Whether the configured generator or encoders are random-weight models built by storygraph."""
    from .tiny import has_random_weights

    m = config.models
    for source in (m.ltx2, m.clip, m.dino, m.ic_lora):
        if not source:
            continue
        p = Path(source).expanduser()
        p = p if p.is_absolute() else Path(story_dir) / p
        if p.exists() and has_random_weights(p):
            return True
    return False


def compare_modes(engine, modes: Sequence[str], scene_ids: Optional[Sequence[str]] = None,
                  progress=None) -> Comparison:
    """Run the comparison on ``engine``'s story (see the module docstring). The engine's lock must be held."""
    modes = list(dict.fromkeys(modes))
    if not modes:
        raise InvalidRequest("name at least one memory mode to compare")
    unknown = [m for m in modes if m not in MEMORY_MODES]
    if unknown:
        raise InvalidRequest(f"unknown memory mode(s) {', '.join(unknown)} (expected: {', '.join(MEMORY_MODES)})")
    if "reference" in modes and not engine.config.models.ic_lora:
        raise InvalidRequest("mode reference needs an IC-LoRA: set [models] ic_lora in storygraph.toml")
    store = engine.store
    scenes = {s.id: s for s in store.scenes()}
    if scene_ids:
        missing = [s for s in scene_ids if s not in scenes]
        if missing:
            raise SceneNotFound(f"no scene(s) {', '.join(missing)}")
        chosen = [scenes[s] for s in scene_ids]
        undone = [s.id for s in chosen if s.status != "done"]
        if undone:
            raise NotReady(f"generate these scenes first: {', '.join(undone)}")
    else:
        chosen = [s for s in scenes.values() if s.status == "done" and s.spec.characters]
    engine.indexes()
    result = Comparison(modes, [], random_weights(engine.config, engine.dir))
    for scene in chosen:
        work = engine.scene_work(scene.id)
        engine._plan(work)
        engine._retrieve(work)
        base_prompt = work.prompt
        chosen_take = next((t for t in store.takes(scene.id) if t.take == scene.chosen_take), None)
        seed = chosen_take.seed if chosen_take is not None else engine.takes.seed(scene.spec, 0)
        gaps = recurrence_gaps(scene, scene.spec.characters, scenes)
        for mode in modes:
            work.prompt = base_prompt
            engine._condition(work, mode=mode)
            key = engine.takes.request_key(scene.spec, 0, work.prompt, work.plan.records, seed=seed)
            existing = store.takes(scene.id)
            made = next((t for t in existing if t.request_key == key), None)
            reused = made is not None
            if progress is not None:
                progress(scene.id, mode, {"reused": reused})
            if not reused:
                number = max((t.take for t in existing), default=-1) + 1
                result_, job = engine._generate(work, number, seed)
                outcome = engine._observe(work, number, seed, result_, job.media)
                job.wait()  # a take is committed once its files are on disk
                outcome.commit.choose = False
                store.commit_take(outcome.commit)
                engine.index.update_scene(scene.id)
                made = outcome.take
            s = made.scores
            result.takes.append(ModeTake(
                scene.id, mode, work.plan.mode, made.take, made.seed, reused, s.identity, s.subject_consistency,
                s.background_consistency, dict(s.identity_by_character), gaps, list(work.plan.notes)))
    return result
