"""Engine overhead per scene — everything but model forward passes — with a short and a long history.

Builds two stories with bulk COPY: 100 done scenes and N (default 100 000) done scenes, three characters
per scene out of 100, every appearance with 768-d CLIP and DINOv2 embeddings. Then appends scenes (cuts,
continuous transitions and time skips in turn) and generates them through the real engine loop: context
query, retrieval over the FAISS indexes, conditioning plan, the tiny LTX-2 pipeline, observation, the commit
transaction, the vector index update and the events. The time spent inside the generator and the encoders
(the model forward passes) is measured and subtracted, and so is media writing, which is measured apart at real
size (``media_write_ms_real_size``).

    python bench/engine.py [--scenes N] [--timed K] [--generation-s 9.5]

Prints one JSON object. ``overhead_share`` divides the large-history overhead by the real-size generation
time (``--generation-s``; default: the published 9.5 s for 768x512, 121 frames, 8 steps on an H100).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storygraph.config import Config, EngineConfig, ModelsConfig  # noqa: E402
from storygraph.domain import Character, Environment, SceneSpec, Story, Transition  # noqa: E402
from storygraph.engine.demo import DEMO_DEFAULTS  # noqa: E402
from storygraph.engine.engine import StoryEngine  # noqa: E402
from storygraph.graphdb.embedded import EmbeddedStore  # noqa: E402
from storygraph.timeline import place_scenes, transition_decay  # noqa: E402
from store import synthetic_transitions  # noqa: E402  (bench/store.py: the same synthetic timeline)

DIM = 768
CHARACTERS = 100
PER_SCENE = 3


class TimedEncoders:
    """768-d unit vectors at the speed of a lookup; the time inside is counted as model time anyway."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.seconds = 0.0

    def _vecs(self, n: int) -> np.ndarray:
        t = time.perf_counter()
        v = self.rng.standard_normal((n, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        self.seconds += time.perf_counter() - t
        return v

    def embed_text(self, texts):
        return self._vecs(len(texts))

    def embed_clip_images(self, frames):
        return self._vecs(len(frames))

    def embed_dino_images(self, frames):
        return self._vecs(len(frames))

    def embed_images(self, frames):
        return self._vecs(len(frames)), self._vecs(len(frames))


class TimedGenerator:
    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0

    def generate(self, request):
        t = time.perf_counter()
        try:
            return self.inner.generate(request)
        finally:
            self.seconds += time.perf_counter() - t


def history_media(folder: Path, rng: np.random.Generator) -> dict:
    """One small take every bulk-loaded scene points at (a video, its last frame, a remembered frame), relative to
    the story folder as the engine stores paths: memory whose frame is missing is skipped, so the history needs
    files for retrieval and conditioning to do their real work."""
    from storygraph.engine import media

    rel = "media/history/take-0"
    take = folder / rel
    frames = rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    media.write_video(take / media.VIDEO_NAME, frames, fps=8.0)
    media.save_image(take / media.LAST_NAME, frames[-1])
    media.save_image(take / "frame_0000.png", frames[0])
    return {"video_path": f"{rel}/{media.VIDEO_NAME}", "last_frame_path": f"{rel}/{media.LAST_NAME}",
            "frames_dir": rel, "frame_path": f"{rel}/frame_0000.png"}


def build_history(folder: Path, scenes: int, rng: np.random.Generator) -> str:
    """A done story of ``scenes`` scenes with appearances, bulk-loaded; returns the last main-branch scene id."""
    store = EmbeddedStore(folder, story_id="bench")
    shared = history_media(folder, rng)
    chars = [f"c{j:03d}" for j in range(CHARACTERS)]
    story = Story("bench", "synthetic history",
                  characters=tuple(Character(c, c, "a synthetic character") for c in chars),
                  environments=(Environment("set", "a synthetic set"),), defaults=DEMO_DEFAULTS)
    store.load_story(story)
    ids = [f"h{i:06d}" for i in range(scenes)]
    transitions = synthetic_transitions(ids)
    placement = place_scenes(ids, transitions)
    p = [placement[s] for s in ids]
    cast = [list(rng.choice(CHARACTERS, PER_SCENE, replace=False)) for _ in ids]
    store.bulk_copy("Scene", {
        "id": ids, "story_id": ["bench"] * scenes, "title": ids, "action": ["walks"] * scenes,
        "characters": [[chars[j] for j in c] for c in cast], "environment": ["set"] * scenes,
        "width": [32] * scenes, "height": [32] * scenes, "frames": [9] * scenes, "fps": [8.0] * scenes,
        "seed": list(range(scenes)), "steps": [2] * scenes, "guidance": [1.0] * scenes, "refs": ["[]"] * scenes,
        "clock": [x.clock for x in p], "branch": [x.branch for x in p], "pos": [x.pos for x in p],
        "parent_id": [x.parent_id for x in p], "status": ["done"] * scenes,
        "chosen_take": [0] * scenes, "takes": [1] * scenes, "notes": [""] * scenes, "prompt": ["walks"] * scenes,
        "video_path": [shared["video_path"]] * scenes, "last_frame_path": [shared["last_frame_path"]] * scenes,
        "frames_dir": [shared["frames_dir"]] * scenes})
    store.bulk_copy("HAS_SCENE", {"from": ["bench"] * scenes, "to": ids})
    store.bulk_copy("NEXT", {"from": [t.from_id for t in transitions], "to": [t.to_id for t in transitions],
                             "kind": [t.kind for t in transitions], "gap": [t.effective_gap for t in transitions],
                             "decay": [transition_decay(t.effective_gap, 10.0) for t in transitions]})
    app_scene = [s for s in ids for _ in range(PER_SCENE)]
    app_char = [chars[j] for c in cast for j in c]
    app_ids = [f"{s}:t0:{c}" for s, c in zip(app_scene, app_char)]
    n = len(app_ids)
    clocks = [placement[s].clock for s in app_scene]

    def unit(rows: int):
        import pyarrow as pa

        v = rng.standard_normal((rows, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM).cast(pa.list_(pa.float32()))

    store.bulk_copy("APPEARS_IN", {"from": app_char, "to": app_scene, "strength": [1.0] * n,
                                   "last_seen_clock": clocks, "identity": [0.9] * n})
    store.bulk_copy("Appearance", {
        "id": app_ids, "story_id": ["bench"] * n, "character_id": app_char, "scene_id": app_scene, "take": [0] * n,
        "frame_index": [0] * n, "frame_path": [shared["frame_path"]] * n, "strength": [1.0] * n,
        "reinforced_clock": clocks,
        "identity_score": [0.9] * n, "clock": clocks, "branch": [placement[s].branch for s in app_scene],
        "pos": [placement[s].pos for s in app_scene], "accepted": [True] * n, "clip": unit(n), "dino": unit(n)})
    store.bulk_copy("OF", {"from": app_ids, "to": app_char})
    store.bulk_copy("IN", {"from": app_ids, "to": app_scene})
    store.close()
    # the last scene on the main branch (branch of the root)
    return max((x for x in p if x.branch == ids[0]), key=lambda x: x.pos).scene_id


def timed_scenes(folder: Path, config: Config, last: str, count: int, generator) -> dict:
    from storygraph.engine import media

    # media writing is measured apart at real size (media_write_ms_real_size); here it is counted out
    media_s = [0.0]
    write_take = media.write_take

    def timed_write_take(*a, **kw):
        t = time.perf_counter()
        try:
            return write_take(*a, **kw)
        finally:
            media_s[0] += time.perf_counter() - t

    media.write_take = timed_write_take
    encoders = TimedEncoders()
    gen = TimedGenerator(generator)
    t = time.perf_counter()
    engine = StoryEngine.open(folder, config=config, generator=gen, encoders=encoders)
    engine.indexes()
    open_s = time.perf_counter() - t
    kinds = ("cut", "continuous", "time_skip")
    per_scene, model = [], []
    parent = last
    # the bulk-loaded history shares one small take: the first appended scene follows a cut
    for i in range(count):
        cast = tuple(f"c{j:03d}" for j in ((i * 7) % CHARACTERS, (i * 13 + 1) % CHARACTERS))
        sid = f"new{i:03d}"
        engine.add_scene(SceneSpec(sid, "turns and walks toward the window", cast, "set"), parent_id=parent,
                         kind="cut" if i == 0 else kinds[i % 3])
        before = gen.seconds + encoders.seconds + media_s[0]
        t = time.perf_counter()
        engine.generate(sid)
        wall = time.perf_counter() - t
        spent = gen.seconds + encoders.seconds + media_s[0] - before
        per_scene.append((wall - spent) * 1000)
        model.append(spent * 1000)
        parent = sid
    engine.close()
    media.write_take = write_take
    warm = per_scene[2:] or per_scene  # the first scenes load the pipeline and compile queries
    return {"open_s": open_s, "overhead_ms": warm, "model_ms": model}


def media_write_ms(repeats: int = 3) -> float:
    """Writing one real-size take as the engine does (768x512, 121 frames: mp4 + the last 9 frames)."""
    from storygraph.engine.generators.base import GenerationResult
    from storygraph.engine.media import write_take

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (512, 768, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, i * 4, axis=1) for i in range(121)])
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            t = time.perf_counter()
            write_take(Path(tmp) / f"take-{r}", GenerationResult(frames=frames), fps=24.0, last_n=9, samples=0)
            out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def real_media(scenes: int, steps: int) -> dict:
    """Critical-path overhead per scene at real media size, media writer inline (before) vs background (after).

    The tiny LTX-2 with a 32x VAE makes real-size takes (768x512, 121 frames, stereo audio) through the real
    pipeline; ``engine.run`` goes through a chain of scenes (continuous transitions and cuts, two characters) and
    each scene's timing record gives its slot on the critical path (``wall_s``) and the generator's call
    (``generate_s``). Overhead = slot - generator call: everything else, media writing included where it is
    waited for. The encoders are 768-d random lookups (microseconds)."""
    from storygraph.engine.tiny.ltx2 import make_ltx2

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_ltx2(root / "ltx2-real-media", with_upsampler=False)
        for mode in ("inline", "background"):
            config = Config(models=ModelsConfig(clip="unused", dino="unused", ltx2=str(model), device="cpu"),
                            engine=EngineConfig(observe_frames=4, media_writer=mode))
            from storygraph.engine.generators.ltx2 import LTX2Generator

            gen = LTX2Generator.from_pretrained(model, device="cpu")
            engine = StoryEngine.open(root / mode, config=config, generator=gen, encoders=TimedEncoders())
            chars = (Character("mara", "Mara", "a woman in a yellow raincoat"),
                     Character("ines", "Ines", "a girl in a red windbreaker"))
            kinds = ("cut", "continuous")
            specs = [SceneSpec(f"s{i:02d}", "turns and walks toward the window", ("mara", "ines")[: 1 + i % 2],
                               "set", width=768, height=512, frames=121, steps=steps, fps=24.0)
                     for i in range(scenes)]
            engine.load(Story(mode, "real media", characters=chars, environments=(Environment("set", "a room"),),
                              scenes=tuple(specs), transitions=tuple(
                                  Transition(a.id, b.id, kinds[i % 2]) for i, (a, b) in enumerate(zip(specs, specs[1:]))),
                              defaults=DEMO_DEFAULTS))
            records = []
            engine.on_timings(records.append)
            t = time.perf_counter()
            engine.run()
            total = time.perf_counter() - t
            engine.close()
            warm = records[1:]  # the first scene pays one-time costs (kernels, allocator)
            over = [(r["wall_s"] - r["stages"]["generate_s"]) * 1000 for r in warm]
            out[mode] = {
                "overhead_ms_p50": round(statistics.median(over), 1),
                "overhead_ms": [round(x, 1) for x in over],
                "wall_s_p50": round(statistics.median(r["wall_s"] for r in warm), 3),
                "generator_s_p50": round(statistics.median(r["stages"]["generate_s"] for r in warm), 3),
                "media_write_ms_p50": round(statistics.median(r["stages"]["media_write_s"] for r in warm) * 1000, 1),
                "media_wait_ms_p50": round(statistics.median(r["stages"]["media_wait_s"] for r in warm) * 1000, 1),
                "run_s": round(total, 2)}
    out["overhead_ratio_after_to_before"] = round(out["background"]["overhead_ms_p50"] /
                                                  out["inline"]["overhead_ms_p50"], 3)
    out["wall_ratio_after_to_before"] = round(out["background"]["wall_s_p50"] / out["inline"]["wall_s_p50"], 3)
    out["media"] = "768x512, 121 frames at 24 fps, stereo audio; random-weight pixels (x264's worst case)"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100_000)
    ap.add_argument("--timed", type=int, default=12, help="scenes generated and timed per history")
    ap.add_argument("--generation-s", type=float, default=9.5)
    ap.add_argument("--real-media", type=int, default=0, metavar="N",
                    help="instead: N scenes at real media size, media writer inline vs background")
    ap.add_argument("--steps", type=int, default=2, help="denoising steps with --real-media")
    args = ap.parse_args()
    if args.real_media:
        print(json.dumps({"scenes": args.real_media, "steps": args.steps, **real_media(args.real_media, args.steps)}))
        return

    from storygraph.engine.demo import prepare
    from storygraph.engine.generators.ltx2 import LTX2Generator

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = prepare(root / "models-home")
        config = Config(models=ModelsConfig(clip="unused", dino="unused", ltx2=cfg.models.ltx2, device="cpu"),
                        engine=EngineConfig(observe_frames=4))
        generator = LTX2Generator.from_pretrained(cfg.models.ltx2, device="cpu")
        results = {}
        for name, n in (("small", 100), ("large", args.scenes)):
            t = time.perf_counter()
            last = build_history(root / name, n, rng)
            build_s = time.perf_counter() - t
            r = timed_scenes(root / name, config, last, args.timed, generator)
            r["build_s"] = build_s
            results[name] = r
        media = media_write_ms()
    small = statistics.median(results["small"]["overhead_ms"])
    large = statistics.median(results["large"]["overhead_ms"])
    out = {
        "scenes": args.scenes,
        "appearances": args.scenes * PER_SCENE,
        "overhead_ms_p50_small": round(small, 2),
        "overhead_ms_p50_large": round(large, 2),
        "overhead_ms_max_large": round(max(results["large"]["overhead_ms"]), 2),
        "ratio": round(large / small, 3),
        "generation_s": args.generation_s,
        "overhead_share": round(large / 1000 / args.generation_s, 5),
        "media_write_ms_real_size": round(media, 1),
        "media_share": round(media / 1000 / args.generation_s, 4),
        "model_and_media_ms_p50_tiny": round(statistics.median(results["large"]["model_ms"]), 1),
        "history_build_s": round(results["large"]["build_s"], 1),
        "index_open_reconcile_s": round(results["large"]["open_s"], 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
