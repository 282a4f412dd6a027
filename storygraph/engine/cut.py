"""A timeline as one film: the chosen takes of its scenes, in story order, stitched into one mp4 with their audio.

``storygraph cut [--branch B] OUT.mp4`` and the studio's timeline player both use :func:`write_cut`. A timeline is
named by its last branch (see :func:`storygraph.engine.runs.timeline_of`); the default is the story's main one
(the branch of its first scene). The cut runs from the first scene to the last one that is done, stopping at the
first scene that is not (what follows it cannot have been made from it).

Every scene keeps its length: frames are re-encoded at the first scene's size and frame rate (a scene at another
rate is resampled in time, another size is scaled to cover and centre-cropped), and each scene's audio is padded
with silence or trimmed to its video's length and resampled to 48 kHz, so sound stays with its picture. Scenes
without audio are silent. The file is written beside its destination and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import Conflict
from .errors import EngineError
from .runs import timeline_of

SAMPLE_RATE = 48_000


class NothingToCut(EngineError, Conflict):
    """The timeline has no generated scene yet."""


@dataclass
class CutScene:
    scene_id: str
    take: Optional[int]
    video_path: str
    start_s: float
    duration_s: float
    frames: int
    fps: float


@dataclass
class Cut:
    branch: str
    scenes: list = field(default_factory=list)  # CutScene, in order
    stopped_at: Optional[str] = None  # the first scene of the timeline that is not done
    path: Optional[str] = None

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.scenes)

    def fingerprint(self) -> str:
        """Changes whenever the file would: which takes, in which order, and their files."""
        h = hashlib.sha1(self.branch.encode())
        for s in self.scenes:
            st = os.stat(s.video_path)
            h.update(f"{s.scene_id}|{s.take}|{s.video_path}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def as_dict(self) -> dict:
        return {"branch": self.branch, "duration_s": round(self.duration_s, 4), "stopped_at": self.stopped_at,
                "path": self.path, "scenes": [asdict(s) for s in self.scenes]}


def main_branch(scenes: Sequence) -> Optional[str]:
    return scenes[0].placement.branch if scenes else None


def branches(scenes: Sequence) -> list[dict]:
    """Every timeline of a story: ``{branch, parent_branch, first, scenes, done}``, the main one first."""
    out: dict = {}
    for s in scenes:
        b = out.setdefault(s.placement.branch, {"branch": s.placement.branch, "first": s.id, "scenes": 0, "done": 0,
                                                "parent_branch": s.placement.lineage.branch if s.placement.lineage
                                                else None})
        b["scenes"] += 1
        b["done"] += s.status == "done"
    return list(out.values())


def plan_cut(store, branch: Optional[str] = None, story_dir=None) -> Cut:
    """Which takes a cut of ``branch`` holds (nothing is read but the graph and the files' headers). ``story_dir``:
    the folder the graph's media paths are relative to (default: the embedded store's)."""
    from ..mediapaths import resolve
    from .media import video_info

    story_dir = story_dir if story_dir is not None else getattr(store, "path", None)
    scenes = store.scenes()
    branch = branch or main_branch(scenes)
    if branch is None:
        raise NothingToCut("the story has no scenes")
    cut = Cut(branch)
    t = 0.0
    for s in timeline_of(scenes, branch):
        video = resolve(story_dir, s.video_path)
        if s.status not in ("done", "stale") or video is None or not video.is_file():
            cut.stopped_at = s.id
            break
        info = video_info(video)
        fps = float(info["fps"] or s.spec.fps or 24.0)
        duration = info["frames"] / fps
        cut.scenes.append(CutScene(s.id, s.chosen_take, str(video), round(t, 6), duration, info["frames"], fps))
        t += duration
    if not cut.scenes:
        raise NothingToCut(f"timeline {branch} has no generated scene yet"
                           + (f" ({cut.stopped_at} is {store.scene(cut.stopped_at).status})" if cut.stopped_at else ""))
    return cut


def write_cut(store, out_path, branch: Optional[str] = None, crf: int = 20, story_dir=None) -> Cut:
    """Stitch the timeline ``branch`` into ``out_path`` (see the module docstring); returns what it holds."""
    import av

    cut = plan_cut(store, branch, story_dir)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part.mp4")
    first = cut.scenes[0]
    fps = first.fps
    with av.open(first.video_path) as c:
        v = c.streams.video[0]
        width, height = v.codec_context.width // 2 * 2, v.codec_context.height // 2 * 2
    audio_any = any(_has_audio(s.video_path) for s in cut.scenes)
    container = av.open(str(tmp), mode="w")
    try:
        vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "veryfast"}
        astream = None
        if audio_any:
            astream = container.add_stream("aac", rate=SAMPLE_RATE)
            astream.layout = "stereo"
        n_out = 0
        samples_out = 0
        audio_out = _AudioOut(astream, container) if astream is not None else None
        for s in cut.scenes:
            frames, audio, rate = _read(s.video_path)
            want = max(1, int(round(s.duration_s * fps)))
            frames = _retime(frames, want)
            if frames.shape[1:3] != (height, width):
                from .media import resize_frames

                frames = np.stack(resize_frames(frames, width, height))
            for f in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                vf.pts = n_out
                n_out += 1
                for packet in vstream.encode(vf):
                    container.mux(packet)
            if astream is not None:
                target = int(round(n_out * SAMPLE_RATE / fps)) - samples_out
                pcm = _fit_audio(audio, rate, target)
                samples_out += pcm.shape[1]
                audio_out.write(pcm)
        for packet in vstream.encode():
            container.mux(packet)
        if audio_out is not None:
            audio_out.close()
    finally:
        container.close()
    os.replace(tmp, out)
    cut.path = str(out)
    return cut


def _has_audio(path) -> bool:
    import av

    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def _read(path):
    """``(frames (F, H, W, 3) uint8, audio (2, n) float32 or None, sample rate)`` of a take's video."""
    import av

    from .media import read_video

    frames, _ = read_video(path)
    audio, rate = None, SAMPLE_RATE
    with av.open(str(path)) as c:
        if c.streams.audio:
            stream = c.streams.audio[0]
            rate = stream.codec_context.sample_rate
            parts = []
            for f in c.decode(stream):
                a = f.to_ndarray().astype(np.float32)
                if f.format.is_packed:
                    a = a.reshape(-1, len(f.layout.channels)).T
                if f.format.name.startswith("s16"):
                    a = a / 32768.0
                parts.append(a)
            if parts:
                audio = np.concatenate(parts, axis=1)
                if audio.shape[0] == 1:
                    audio = np.repeat(audio, 2, axis=0)
                audio = audio[:2]
    return frames, audio, rate


def _retime(frames, want: int):
    """``want`` frames spread evenly over ``frames`` (nearest frame in time)."""
    n = len(frames)
    if n == want:
        return frames
    idx = np.minimum(n - 1, np.floor(np.arange(want) * n / want).astype(int))
    return frames[idx]


def _fit_audio(audio, rate: int, samples: int):
    """A (2, ``samples``) float32 block at SAMPLE_RATE: ``audio`` resampled, then padded with silence or cut."""
    out = np.zeros((2, max(0, samples)), dtype=np.float32)
    if audio is None or samples <= 0 or audio.shape[1] == 0:
        return out
    if rate != SAMPLE_RATE:
        n = int(round(audio.shape[1] * SAMPLE_RATE / rate))
        x = np.linspace(0, audio.shape[1] - 1, num=max(1, n))
        audio = np.stack([np.interp(x, np.arange(audio.shape[1]), ch) for ch in audio]).astype(np.float32)
    k = min(samples, audio.shape[1])
    out[:, :k] = audio[:, :k]
    return out


class _AudioOut:
    """Feeds the AAC encoder frames of exactly its frame size (only the last may be shorter)."""

    def __init__(self, stream, container):
        self.stream, self.container = stream, container
        self.size = stream.codec_context.frame_size or 1024
        self.buf = np.zeros((2, 0), dtype=np.float32)
        self.pts = 0

    def write(self, pcm) -> None:
        self.buf = np.concatenate([self.buf, pcm.astype(np.float32)], axis=1)
        while self.buf.shape[1] >= self.size:
            self._frame(self.buf[:, :self.size])
            self.buf = self.buf[:, self.size:]

    def close(self) -> None:
        if self.buf.shape[1]:
            self._frame(self.buf)
        for packet in self.stream.encode(None):
            self.container.mux(packet)

    def _frame(self, block) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(block, -1.0, 1.0)), format="fltp",
                                           layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        self.pts += block.shape[1]
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
