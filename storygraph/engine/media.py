"""Video and frame files of a story: takes on disk, last frames, sampled frames, thumbnails.

Layout under the story dir: ``media/<scene id>/take-<n>/`` holds ``video.mp4`` (H.264, with an AAC audio
track when the generator made audio), ``last.png`` (the final frame), ``last_frames/NNNN.png`` (the final
frames a continuous transition extends from; NNNN is the frame's index in the video) and
``frames/NNNN.png`` (frames sampled for the observer). Video I/O goes through PyAV; images through Pillow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..faults import crash_point, write_point
from .arrays import to_uint8

PathLike = Union[str, "os.PathLike[str]"]

VIDEO_NAME = "video.mp4"
LAST_NAME = "last.png"
LAST_FRAMES_DIR = "last_frames"
FRAMES_DIR = "frames"


@dataclass(frozen=True)
class TakeMedia:
    take_dir: Path
    video_path: Path
    last_frame_path: Path
    last_frames_dir: Path
    frames_dir: Path
    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    sampled: tuple = ()  # indices of the frames written under frames/

    @property
    def last_frame_paths(self) -> list:
        return sorted(self.last_frames_dir.glob("*.png"))

    @property
    def sampled_frame_paths(self) -> list:
        return sorted(self.frames_dir.glob("*.png"))


def take_dir(story_dir: PathLike, scene_id: str, take: int) -> Path:
    """``<story dir>/media/<scene id>/take-<n>``."""
    return Path(story_dir) / "media" / str(scene_id) / f"take-{int(take)}"


def load_image(path: PathLike):
    """An image file as a uint8 RGB array (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def save_image(path: PathLike, frame, **options) -> Path:
    """Write a frame as an image, whole or not at all: to a temporary name, then renamed (a full disk leaves no
    half-written file under the real name)."""
    from PIL import Image

    path = Path(path)
    write_point("media", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        Image.fromarray(to_uint8(frame)).save(tmp, format=Image.registered_extensions().get(path.suffix.lower()),
                                              **options)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def spread_indices(num_frames: int, count: int) -> list:
    """``count`` frame indices spread evenly over the video, first and last included."""
    if num_frames <= 0 or count <= 0:
        return []
    if count >= num_frames:
        return list(range(num_frames))
    if count == 1:
        return [0]
    return sorted({int(round(i * (num_frames - 1) / (count - 1))) for i in range(count)})


def write_video(path: PathLike, frames, fps: float, audio=None, sample_rate: Optional[int] = None, crf: int = 18) -> Path:
    """Encode uint8 frames (F, H, W, 3) as H.264 mp4, with ``audio`` (channels, n) float in [-1, 1] as AAC.

    Odd widths/heights are cropped by one pixel: yuv420p needs even sizes.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {frames.shape}")
    frames = to_uint8(frames)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    path = Path(path)
    write_point("media", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    try:
        container = av.open(str(tmp), mode="w")
    except BaseException:
        _remove(tmp)
        raise
    try:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        astream = None
        if audio is not None:
            if not sample_rate:
                raise ValueError("sample_rate is required with audio")
            astream = container.add_stream("aac", rate=int(sample_rate))
            astream.layout = "stereo"
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            _write_audio(container, astream, audio, int(sample_rate))
        container.close()
    except BaseException:
        _close_quietly(container)
        _remove(tmp)
        raise
    os.replace(tmp, path)
    return path


def _close_quietly(container) -> None:
    try:
        container.close()
    except Exception:  # closing a container whose write failed fails too; the write's error is the one to report
        pass


def _write_audio(container, astream, audio, sample_rate: int) -> None:
    import av

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.shape[0] > a.shape[1] and a.shape[1] <= 8:  # (n, channels) given
        a = a.T
    if a.shape[0] == 1:
        a = np.repeat(a, 2, axis=0)
    a = a[:2]
    pcm = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
    interleaved = np.ascontiguousarray(pcm.T).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format=astream.codec_context.format or "fltp", layout="stereo", rate=sample_rate)
    for rf in resampler.resample(frame) + resampler.resample(None):
        for packet in astream.encode(rf):
            container.mux(packet)
    for packet in astream.encode(None):
        container.mux(packet)


def read_video(path: PathLike):
    """``(frames uint8 (F, H, W, 3), fps)`` of a video file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8), fps


def video_info(path: PathLike) -> dict:
    """Frame count, fps, size and audio presence (stream sample rate, channels) of a video file."""
    import av

    with av.open(str(path)) as container:
        v = container.streams.video[0]
        n = sum(1 for _ in container.decode(v))
        info = {"frames": n, "fps": float(v.average_rate or 0), "width": v.codec_context.width,
                "height": v.codec_context.height, "audio": None}
    with av.open(str(path)) as container:
        if container.streams.audio:
            a = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(a))
            info["audio"] = {"sample_rate": a.codec_context.sample_rate, "channels": a.codec_context.channels,
                             "samples": samples}
    return info


def planned_take(take_dir: PathLike, result, fps: Optional[float] = None) -> TakeMedia:
    """The ``TakeMedia`` that :func:`write_take` will return for ``result``, before anything is written."""
    d = Path(take_dir)
    shape = np.shape(result.frames)
    if len(shape) != 4 or shape[0] == 0:
        raise ValueError(f"a take needs frames (F, H, W, 3), got {shape}")
    fps = float(fps if fps is not None else (getattr(result, "settings", {}) or {}).get("fps", 24.0))
    return TakeMedia(take_dir=d, video_path=d / VIDEO_NAME, last_frame_path=d / LAST_NAME,
                     last_frames_dir=d / LAST_FRAMES_DIR, frames_dir=d / FRAMES_DIR, num_frames=int(shape[0]),
                     fps=fps, width=int(shape[2]) // 2 * 2, height=int(shape[1]) // 2 * 2,
                     has_audio=getattr(result, "audio", None) is not None)


def write_take(take_dir: PathLike, result, fps: Optional[float] = None, last_n: int = 9, samples: int = 8) -> TakeMedia:
    """Write a generation result as a take: video.mp4 (+ audio), last.png, last_frames/, frames/.

    ``result``: a ``GenerationResult`` (or anything with ``frames`` and optional ``audio``). ``samples``:
    how many frames to keep for the observer, spread evenly, first and last included.
    """
    d = Path(take_dir)
    d.mkdir(parents=True, exist_ok=True)
    frames = to_uint8(result.frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"a take needs frames (F, H, W, 3), got {frames.shape}")
    fps = float(fps if fps is not None else (getattr(result, "settings", {}) or {}).get("fps", 24.0))
    audio = getattr(result, "audio", None)
    video = write_video(d / VIDEO_NAME, frames, fps,
                        audio=None if audio is None else audio.samples,
                        sample_rate=None if audio is None else audio.sample_rate)
    crash_point("during_media")
    last = save_image(d / LAST_NAME, frames[-1])
    last_dir = d / LAST_FRAMES_DIR
    _clear_pngs(last_dir)
    n = len(frames)
    for i in range(max(0, n - max(1, int(last_n))), n):
        save_image(last_dir / f"{i:04d}.png", frames[i])
    frames_dir = d / FRAMES_DIR
    _clear_pngs(frames_dir)
    picked = spread_indices(n, samples)
    for i in picked:
        save_image(frames_dir / f"{i:04d}.png", frames[i])
    return TakeMedia(take_dir=d, video_path=video, last_frame_path=last, last_frames_dir=last_dir,
                     frames_dir=frames_dir, num_frames=n, fps=fps, width=frames.shape[2] // 2 * 2,
                     height=frames.shape[1] // 2 * 2, has_audio=audio is not None, sampled=tuple(picked))


def _clear_pngs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.glob("*.png"):
        p.unlink()


def last_frame_paths(take: Union[PathLike, TakeMedia], n: Optional[int] = None) -> list:
    """Paths of a take's last frames, oldest first (at most ``n``, the latest ones)."""
    d = take.take_dir if isinstance(take, TakeMedia) else Path(take)
    folder = d / LAST_FRAMES_DIR if (d / LAST_FRAMES_DIR).is_dir() else d
    paths = sorted(folder.glob("*.png"))
    if folder == d:
        paths = [p for p in paths if p.name != LAST_NAME] or sorted(d.glob(LAST_NAME))
    return paths[-n:] if n else paths


def read_last_frames(take: Union[PathLike, TakeMedia], n: Optional[int] = None) -> list:
    """A parent take's last frames as uint8 arrays, oldest first.

    Reads ``last_frames/*.png``; a take without that folder falls back to the tail of ``video.mp4``, then
    to ``last.png``.
    """
    d = take.take_dir if isinstance(take, TakeMedia) else Path(take)
    if d.is_file():  # a video file was given
        frames, _ = read_video(d)
        return list(frames[-n:] if n else frames)
    if (d / LAST_FRAMES_DIR).is_dir() and any((d / LAST_FRAMES_DIR).glob("*.png")):
        return [load_image(p) for p in last_frame_paths(d, n)]
    if (d / VIDEO_NAME).exists():
        frames, _ = read_video(d / VIDEO_NAME)
        return list(frames[-n:] if n else frames)
    if (d / LAST_NAME).exists():
        return [load_image(d / LAST_NAME)]
    raise FileNotFoundError(f"{d}: no last_frames/, {VIDEO_NAME} or {LAST_NAME}")


def thumbnail(src, dest: PathLike, max_side: int = 160, quality: int = 80) -> Path:
    """A small JPEG (or PNG, by ``dest``'s suffix) of an image path, a uint8 frame, or a video's first frame."""
    from PIL import Image

    if isinstance(src, (str, os.PathLike)) and Path(src).suffix.lower() in {".mp4", ".mov", ".mkv", ".webm"}:
        frame = _first_frame(src)
    elif isinstance(src, (str, os.PathLike)):
        frame = load_image(src)
    else:
        frame = to_uint8(src)
    im = Image.fromarray(frame)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() in {".jpg", ".jpeg"}:
        im.save(dest, format="JPEG", quality=quality)
    else:
        im.save(dest)
    return dest


def _first_frame(path: PathLike):
    import av

    with av.open(str(path)) as container:
        for f in container.decode(container.streams.video[0]):
            return f.to_ndarray(format="rgb24")
    raise ValueError(f"{path}: no video frames")


def mse(a, b) -> float:
    """Mean squared error between two uint8 (or float) images of one size, in 0..255 units."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean((a - b) ** 2))


def resize_frames(frames: Sequence, width: int, height: int) -> list:
    """Frames resized (cover, then centre crop) to ``width``x``height``, as the LTX-2 pipeline does."""
    from PIL import Image

    out = []
    for f in frames:
        im = Image.fromarray(to_uint8(f))
        scale = max(height / im.height, width / im.width)
        nw, nh = max(width, round(im.width * scale)), max(height, round(im.height * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - width) // 2, (nh - height) // 2
        out.append(np.asarray(im.crop((left, top, left + width, top + height)), dtype=np.uint8))
    return out
