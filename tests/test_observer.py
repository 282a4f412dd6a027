"""Observer: formulas on constructed features with hand-computed answers, and the whole path on a clip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from storygraph.domain import Appearance, Character, MemoryParams
from storygraph.engine.observer import (
    CharacterMemory,
    Observer,
    first_accepted,
    frame_identity,
    initial_strength,
    representative_frame,
    observed_frame_indices,
    subject_consistency,
    text_alignment,
    transition_smoothness,
    vbench_consistency,
)


def unit(deg):
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


# ---- pure formulas


def test_observed_frame_indices():
    assert observed_frame_indices(121) == [0, 13, 27, 40, 53, 67, 80, 93, 107, 120]
    idx = observed_frame_indices(121, 8)
    assert idx[0] == 0 and idx[-1] == 120 and len(idx) == 10
    assert np.all(np.diff(idx) >= 13) and np.all(np.diff(idx) <= 14)
    assert observed_frame_indices(121, 4) == [0, 24, 48, 72, 96, 120]
    assert observed_frame_indices(1) == [0]
    assert observed_frame_indices(5, 8) == [0, 1, 2, 3, 4]
    assert observed_frame_indices(9, 0) == [0, 8]
    with pytest.raises(ValueError):
        observed_frame_indices(0)


def test_identical_frames_give_consistency_one():
    f = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]]), (6, 1))
    assert vbench_consistency(f) == pytest.approx(1.0, abs=1e-12)
    assert subject_consistency(f * 7.0) == pytest.approx(1.0, abs=1e-12)  # scale-free


def test_vbench_known_cosines():
    # f0 at 0°, f1 at 60°, f2 at 120°:
    # i=1: ½(cos60 + cos60) = 0.5; i=2: ½(max(0, cos60) + max(0, cos120)) = ½(0.5 + 0) = 0.25
    f = np.stack([unit(0), unit(60), unit(120)])
    assert vbench_consistency(f) == pytest.approx((0.5 + 0.25) / 2, abs=1e-12)
    # f0 0°, f1 90°, f2 0°: i=1: ½(0 + 0) = 0; i=2: ½(cos90 -> 0, cos0 = 1) = 0.5
    f = np.stack([unit(0), unit(90), unit(0)])
    assert vbench_consistency(f) == pytest.approx(0.25, abs=1e-12)
    # opposite frames clip to zero rather than going negative
    assert vbench_consistency(np.stack([unit(0), unit(180)])) == pytest.approx(0.0, abs=1e-12)
    assert vbench_consistency(unit(0)[None]) is None


def test_text_alignment_and_transition_smoothness():
    assert text_alignment(unit(0), np.stack([unit(0), unit(90), unit(60)])) == pytest.approx((1 + 0 + 0.5) / 3)
    clip = np.random.default_rng(0).normal(size=(5, 16))
    assert transition_smoothness(clip[-1], clip[-1]) == pytest.approx(1.0, abs=1e-12)
    assert transition_smoothness(unit(0), unit(60)) == pytest.approx(0.5, abs=1e-12)


def test_frame_identity_bases():
    frames = np.stack([unit(0), unit(90), unit(45)])
    ident, basis = frame_identity(frames, anchor=unit(0))
    assert basis == "anchor"
    np.testing.assert_allclose(ident, [1.0, 0.0, math.sqrt(0.5)], atol=1e-12)
    assert representative_frame(ident) == 0
    ident, basis = frame_identity(frames, anchor=unit(0), prior=np.stack([unit(90)]))
    assert basis == "anchor+prior"
    np.testing.assert_allclose(ident, [0.5, 0.5, math.sqrt(0.5)], atol=1e-12)
    assert representative_frame(ident) == 2
    ident, basis = frame_identity(frames, prior=np.stack([unit(90), unit(0)]))
    assert basis == "prior"
    np.testing.assert_allclose(ident, [0.5, 0.5, math.sqrt(0.5)], atol=1e-12)
    # no anchor, no prior: mean cosine to the other frames
    ident, basis = frame_identity(frames)
    assert basis == "self"
    s = math.sqrt(0.5)
    np.testing.assert_allclose(ident, [(0 + s) / 2, (0 + s) / 2, (s + s) / 2], atol=1e-12)
    assert representative_frame(ident) == 2
    np.testing.assert_allclose(frame_identity(unit(30)[None])[0], [1.0])


def _app(cid, clock, dino, accepted=True, pos=0, take=0):
    return Appearance(id=f"{cid}-{clock}-{take}", character_id=cid, scene_id=f"s{clock}", frame_index=0,
                      frame_path="", strength=1.0, reinforced_clock=clock, identity_score=1.0,
                      clip=[0.0, 1.0], dino=list(dino), clock=clock, pos=pos, take=take, accepted=accepted)


def test_first_accepted_is_the_fallback_anchor():
    apps = [_app("a", 5.0, unit(10)), _app("a", 2.0, unit(20), accepted=False), _app("a", 3.0, unit(30), take=1),
            _app("a", 3.0, unit(40), take=0)]
    assert first_accepted(apps).dino == list(unit(40))
    assert first_accepted([_app("a", 1.0, unit(0), accepted=False)]) is None
    assert first_accepted([]) is None


def test_initial_strength_clips():
    p = MemoryParams(strength_init=2.0, strength_min=0.25, strength_max=1.5)
    assert initial_strength(0.5, p) == pytest.approx(1.0)
    assert initial_strength(0.9, p) == pytest.approx(1.5)
    assert initial_strength(-0.3, p) == pytest.approx(0.25)


# ---- end to end on a clip


def _clip(n=25, h=64, w=96, seed=0):
    """A moving bright square over a drifting gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        bg = np.stack([60 + 40 * np.sin(xx / 11 + t / 6 + c) for c in range(3)], -1)
        x0 = 5 + (t * 2) % (w - 25)
        bg[20:44, x0:x0 + 20] = [230, 40 + 5 * t % 200, 30]
        frames.append(np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255))
    return np.stack(frames).astype(np.uint8)


def test_observer_end_to_end(tmp_path, tiny_encoders):
    from PIL import Image

    frames = _clip()
    idx = observed_frame_indices(len(frames), 8)
    ref_path = tmp_path / "refs" / "hero.png"
    ref_path.parent.mkdir()
    Image.fromarray(frames[idx[3]]).save(ref_path)  # the hero's reference is one of the sampled frames
    hero = Character("hero", "Hero", reference_path="refs/hero.png")
    sidekick = Character("kid", "Kid")
    params = MemoryParams(strength_init=3.0, strength_min=0.5, strength_max=2.5)
    obs = Observer(tiny_encoders, reference_root=tmp_path, params=params)
    media = tmp_path / "media" / "s2" / "take0"
    out = obs.observe(frames, scene_id="s2", prompt="a red square slides right", characters=[hero, sidekick],
                      parent_last_frame=frames[0], media_dir=media, clock=3.0, branch="main", pos=2, take=0)

    assert out.frame_indices == idx
    assert out.clip.shape == (len(idx), tiny_encoders.clip_dim) and out.dino.shape == (len(idx), tiny_encoders.dino_dim)
    s = out.scores
    assert s.transition_smoothness == pytest.approx(1.0, abs=1e-5)  # parent's last frame == this first frame
    assert s.subject_consistency == pytest.approx(vbench_consistency(out.dino), abs=1e-9)
    assert s.background_consistency == pytest.approx(vbench_consistency(out.clip), abs=1e-9)
    assert s.text_alignment == pytest.approx(text_alignment(tiny_encoders.embed_text(["a red square slides right"])[0],
                                                            out.clip), abs=1e-5)
    assert 0.0 <= s.subject_consistency <= 1.0 and -1.0 <= s.text_alignment <= 1.0

    by = {a.character_id: a for a in out.appearances}
    assert set(by) == {"hero", "kid"}
    h = by["hero"]
    # the reference is frame idx[3]: it is the representative frame, with identity 1
    assert out.anchor_source["hero"] == "reference" and out.identity_basis["hero"] == "anchor"
    assert h.frame_index == idx[3] and h.identity_score == pytest.approx(1.0, abs=1e-5)
    assert h.strength == pytest.approx(2.5)  # 3.0 x identity 1.0, clipped to strength_max
    assert h.reinforced_clock == 3.0 and (h.clock, h.branch, h.pos, h.take) == (3.0, "main", 2, 0)
    np.testing.assert_allclose(h.dino, out.dino[3], atol=1e-7)
    np.testing.assert_allclose(h.clip, out.clip[3], atol=1e-7)
    assert np.array_equal(np.asarray(Image.open(h.frame_path)), frames[idx[3]])
    assert h.frame_path.startswith(str(media))

    # the sidekick has no reference and no past: identity is the clip's self-consistency
    k = by["kid"]
    assert out.identity_basis["kid"] == "self" and out.anchor_source["kid"] is None
    ident, _ = frame_identity(out.dino)
    assert k.frame_index == idx[int(np.argmax(ident))]
    assert k.identity_score == pytest.approx(float(ident.max()), abs=1e-9)
    assert k.strength == pytest.approx(min(max(3.0 * k.identity_score, 0.5), 2.5))
    assert np.array_equal(np.asarray(Image.open(k.frame_path)), frames[k.frame_index])
    assert s.identity == pytest.approx((h.identity_score + k.identity_score) / 2)
    assert s.identity_by_character == {"hero": h.identity_score, "kid": k.identity_score}
    assert sorted(p.name for p in media.iterdir()) == sorted({f"frame_{a.frame_index:04d}.png" for a in out.appearances})


def test_missing_reference_falls_back_to_first_accepted_appearance(tiny_encoders):
    frames = _clip(seed=1)
    first_frame, later_frame = _clip(n=3, seed=7)[0], _clip(n=30, seed=8)[29]
    (d_first, d_later) = tiny_encoders.embed_dino_images([first_frame, later_frame])
    prior = [_app("kid", 4.0, d_later), _app("kid", 1.0, d_first), _app("kid", 0.5, -d_first, accepted=False)]
    out = Observer(tiny_encoders).observe(frames, scene_id="s5", characters=[CharacterMemory(Character("kid", "Kid"),
                                                                                             prior=prior)])
    assert out.anchor_source["kid"] == "first_appearance"
    assert out.identity_basis["kid"] == "anchor+prior"
    # by hand: mean of (cos to the clock-1 appearance) and (mean cos to the two accepted appearances)
    f = out.dino / np.linalg.norm(out.dino, axis=1, keepdims=True)
    anchor = f @ d_first
    prior_mean = (f @ d_first + f @ d_later) / 2
    expected = (anchor + prior_mean) / 2
    a = out.appearances[0]
    assert a.frame_index == out.frame_indices[int(np.argmax(expected))]
    assert a.identity_score == pytest.approx(float(expected.max()), abs=1e-5)
    assert a.frame_path == "" and out.scores.text_alignment is None and out.scores.transition_smoothness is None


def test_reference_embeddings_are_cached_and_inputs_forms_agree(tmp_path, tiny_encoders):
    from PIL import Image

    frames = _clip(n=17, seed=3)
    ref = tmp_path / "r.png"
    Image.fromarray(frames[8]).save(ref)
    obs = Observer(tiny_encoders, samples=3)
    c = Character("c", "C", reference_path=str(ref))
    a = obs.observe(frames, scene_id="x", prompt="p", characters=[c])
    assert str(ref) in obs._reference_cache
    b = obs.observe([Image.fromarray(f) for f in frames], scene_id="x", prompt="p", characters=[c])
    f = obs.observe(frames.astype(np.float32) / 255.0, scene_id="x", prompt="p", characters=[c])
    for other in (b, f):
        for key, val in a.scores.as_dict().items():
            assert other.scores.as_dict()[key] == pytest.approx(val, abs=1e-5)
        assert other.appearances[0].frame_index == a.appearances[0].frame_index == 8
    # a reference given as an embedding is used as is
    emb = tiny_encoders.embed_dino_images(frames[0])[0]
    e = obs.observe(frames, scene_id="x", characters=[CharacterMemory(c, reference=emb)])
    assert e.appearances[0].frame_index == 0 and e.appearances[0].identity_score == pytest.approx(1.0, abs=1e-5)
