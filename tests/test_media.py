"""Takes on disk: mp4 with audio, last frames, sampled frames, readers and thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from storygraph.engine import media
from storygraph.engine.generators.base import AudioTrack, GenerationResult


def _result(n=17, h=32, w=48, audio=True, seed=0):
    rs = np.random.RandomState(seed)
    frames = (rs.rand(n, h, w, 3) * 255).astype(np.uint8)
    track = None
    if audio:
        t = np.arange(int(16000 * n / 24)) / 16000
        track = AudioTrack(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)]).astype(np.float32) * 0.5,
                           16000)
    return GenerationResult(frames=frames, audio=track)


def test_write_take_layout_and_contents(tmp_path):
    res = _result()
    d = media.take_dir(tmp_path, "s03", 2)
    assert d == tmp_path / "media" / "s03" / "take-2"
    tm = media.write_take(d, res, fps=24, last_n=9, samples=5)

    assert tm.video_path == d / "video.mp4" and tm.last_frame_path == d / "last.png"
    info = media.video_info(tm.video_path)
    assert (info["frames"], info["width"], info["height"]) == (17, 48, 32)
    assert info["fps"] == pytest.approx(24.0)
    assert info["audio"] is not None and info["audio"]["sample_rate"] == 16000 and info["audio"]["channels"] == 2
    # PNGs are lossless: the last frame and the last nine come back bit for bit, named by frame index
    assert np.array_equal(media.load_image(tm.last_frame_path), res.frames[-1])
    names = [p.name for p in tm.last_frame_paths]
    assert names == [f"{i:04d}.png" for i in range(8, 17)]
    back = media.read_last_frames(d)
    assert len(back) == 9 and all(np.array_equal(a, b) for a, b in zip(back, res.frames[8:]))
    assert [p.name for p in tm.sampled_frame_paths] == [f"{i:04d}.png" for i in (0, 4, 8, 12, 16)]
    assert media.read_last_frames(d, n=3)[0].shape == (32, 48, 3)
    assert len(media.read_last_frames(d, n=3)) == 3


def test_video_roundtrip_and_fallbacks(tmp_path):
    res = _result(n=9, audio=False, seed=1)
    path = media.write_video(tmp_path / "v.mp4", res.frames, fps=25)
    frames, fps = media.read_video(path)
    assert frames.shape == (9, 32, 48, 3) and fps == pytest.approx(25.0)
    assert media.video_info(path)["audio"] is None
    # lossy, but the encoder must keep the picture: far closer to its source than to another frame
    assert media.mse(frames[4], res.frames[4]) < 0.5 * media.mse(frames[4], res.frames[5])
    # a take folder without last_frames/ falls back to the video's tail
    d = tmp_path / "take"
    d.mkdir()
    (tmp_path / "v.mp4").rename(d / "video.mp4")
    tail = media.read_last_frames(d, n=2)
    assert len(tail) == 2 and tail[-1].shape == (32, 48, 3)
    with pytest.raises(FileNotFoundError):
        media.read_last_frames(tmp_path / "empty-take-does-not-exist")


def test_odd_sizes_are_cropped_to_even(tmp_path):
    frames = np.zeros((3, 33, 47, 3), np.uint8)
    info = media.video_info(media.write_video(tmp_path / "odd.mp4", frames, fps=24))
    assert (info["width"], info["height"]) == (46, 32)


def test_thumbnails(tmp_path):
    res = _result(n=5, h=90, w=160, audio=False)
    tm = media.write_take(tmp_path / "t", res, fps=24)
    jpg = media.thumbnail(tm.video_path, tmp_path / "thumb.jpg", max_side=64)
    png = media.thumbnail(tm.last_frame_path, tmp_path / "thumb.png", max_side=32)
    with Image.open(jpg) as a, Image.open(png) as b:
        assert a.format == "JPEG" and max(a.size) == 64 and a.size[0] > a.size[1]
        assert b.format == "PNG" and max(b.size) == 32


def test_spread_indices():
    assert media.spread_indices(121, 8)[0] == 0 and media.spread_indices(121, 8)[-1] == 120
    assert len(media.spread_indices(121, 8)) == 8
    assert media.spread_indices(5, 10) == [0, 1, 2, 3, 4]
    assert media.spread_indices(0, 3) == []
