"""Encoders: tiny CLIP/DINOv2 saved and re-loaded through from_pretrained, preprocessing, errors, models check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / (9 + 3 * c) + seed) * np.cos(yy / 13) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def test_tiny_models_saved_and_loaded_with_from_pretrained(tiny_model_dirs, tiny_encoders):
    from transformers import CLIPModel, Dinov2Model

    clip_files = set(os.listdir(tiny_model_dirs["clip"]))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= clip_files
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(os.listdir(tiny_model_dirs["dino"]))
    assert isinstance(tiny_encoders.clip_model, CLIPModel)
    assert isinstance(tiny_encoders.dino_model, Dinov2Model)
    assert tiny_encoders.dtype == torch.float32 and tiny_encoders.device == "cpu"
    assert tiny_encoders.clip_model.config._attn_implementation == "sdpa"
    assert tiny_encoders.dino_model.config._attn_implementation == "sdpa"
    # weights are the saved ones, not a fresh init
    saved = CLIPModel.from_pretrained(tiny_model_dirs["clip"])
    assert torch.equal(saved.visual_projection.weight, tiny_encoders.clip_model.visual_projection.weight)


@pytest.mark.parametrize("kind,size", [("clip", "tiny"), ("dino", "tiny"), ("clip", "vit-l-14"), ("dino", "base")])
@pytest.mark.parametrize("shape", [(512, 768), (103, 77), (300, 300)])
def test_tensor_preprocessing_matches_hf_image_processor(tmp_path, kind, size, shape):
    from transformers import AutoImageProcessor

    from storygraph.engine.encoders import ImagePrep
    from storygraph.engine.tiny.encoders import _image_processor

    _image_processor(kind, size).save_pretrained(tmp_path)
    hf = AutoImageProcessor.from_pretrained(tmp_path)
    prep = ImagePrep.from_config(json.loads((tmp_path / "preprocessor_config.json").read_text()))
    img = _image(*shape, seed=shape[0])
    ref = hf(images=[img], return_tensors="pt")["pixel_values"]
    ours = prep(torch.from_numpy(img[None]))
    assert ours.shape == ref.shape
    diff = (ours - ref).abs()
    one_level = 1.0 / 255.0 / min(prep.std) + 1e-4  # at most one uint8 rounding step apart
    assert float(diff.max()) <= one_level
    assert float(diff.mean()) < 1e-3


def test_embed_images_match_the_hf_model_on_processor_input(tiny_model_dirs, tiny_encoders):
    from transformers import AutoImageProcessor

    frames = np.stack([_image(64, 96, s) for s in range(5)])
    clip, dino = tiny_encoders.embed_images(frames)
    assert clip.shape == (5, tiny_encoders.clip_dim) and dino.shape == (5, tiny_encoders.dino_dim)
    assert clip.dtype == np.float32 and dino.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(clip, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(dino, axis=1), 1.0, atol=1e-5)
    assert np.all(np.abs(clip[0] @ clip[1:].T) < 0.99999)  # different frames, different embeddings

    with torch.inference_mode():
        px = AutoImageProcessor.from_pretrained(tiny_model_dirs["clip"])(images=list(frames), return_tensors="pt")
        m = tiny_encoders.clip_model
        ref = m.visual_projection(m.vision_model(pixel_values=px["pixel_values"]).pooler_output)
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
        px = AutoImageProcessor.from_pretrained(tiny_model_dirs["dino"])(images=list(frames), return_tensors="pt")
        ref_d = tiny_encoders.dino_model(pixel_values=px["pixel_values"]).last_hidden_state[:, 0]
        ref_d = torch.nn.functional.normalize(ref_d, dim=-1).numpy()
    assert np.min(np.sum(clip * ref, axis=1)) > 0.9999
    assert np.min(np.sum(dino * ref_d, axis=1)) > 0.9999


def test_input_forms_and_mixed_sizes_keep_order(tiny_encoders):
    from PIL import Image

    a, b, c = _image(64, 96, 1), _image(40, 40, 2), _image(64, 96, 3)
    single = [tiny_encoders.embed_dino_images(x)[0] for x in (a, b, c)]
    mixed = tiny_encoders.embed_dino_images([a, b, c])
    for i in range(3):
        np.testing.assert_allclose(mixed[i], single[i], atol=1e-5)
    as_pil = tiny_encoders.embed_clip_images([Image.fromarray(a), Image.fromarray(c)])
    as_float = tiny_encoders.embed_clip_images(np.stack([a, c]).astype(np.float32) / 255.0)
    as_uint8 = tiny_encoders.embed_clip_images(np.stack([a, c]))
    np.testing.assert_allclose(as_pil, as_uint8, atol=1e-5)
    np.testing.assert_allclose(as_float, as_uint8, atol=1e-5)
    # batching does not change results
    small_batches = tiny_encoders.batch_size
    try:
        tiny_encoders.batch_size = 1
        np.testing.assert_allclose(tiny_encoders.embed_dino_images([a, b, c]), mixed, atol=1e-5)
    finally:
        tiny_encoders.batch_size = small_batches


def test_embed_text(tiny_encoders):
    texts = ["a red fox jumps over the fence", "a lighthouse at night", "x " * 300]
    emb = tiny_encoders.embed_text(texts)
    assert emb.shape == (3, tiny_encoders.clip_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert abs(float(emb[0] @ emb[1])) < 0.9999
    np.testing.assert_allclose(tiny_encoders.embed_text(texts[1]), emb[1:2], atol=1e-5)  # padding-independent
    assert tiny_encoders.embed_text([]).shape == (0, tiny_encoders.clip_dim)


def test_fp8_linear_layers_stay_close_to_float32(tiny_model_dirs):
    from storygraph.engine.encoders import Encoders

    full = Encoders.from_pretrained(tiny_model_dirs["clip"], tiny_model_dirs["dino"], device="cpu")
    fp8 = Encoders.from_pretrained(tiny_model_dirs["clip"], tiny_model_dirs["dino"], device="cpu", fp8=True)
    assert type(fp8.dino_model.encoder.layer[0].mlp.fc1).__name__ == "Fp8Linear"
    frames = np.stack([_image(64, 96, s) for s in range(4)])
    c32, d32 = full.embed_images(frames)
    c8, d8 = fp8.embed_images(frames)
    assert not np.array_equal(c8, c32)  # really ran another path
    assert np.min(np.sum(c8 * c32, axis=1)) > 0.98
    assert np.min(np.sum(d8 * d32, axis=1)) > 0.98


def test_missing_model_says_what_to_download(tmp_path, tiny_model_dirs, monkeypatch):
    from storygraph.engine.encoders import Encoders, ModelNotFound

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as err:
        Encoders.from_pretrained("openai/clip-vit-large-patch14", tiny_model_dirs["dino"], device="cpu")
    msg = str(err.value)
    assert "hf download openai/clip-vit-large-patch14 --local-dir" in msg
    assert "[models]" in msg and "clip =" in msg and "storygraph.toml" in msg
    with pytest.raises(ModelNotFound) as err:
        Encoders.from_pretrained(tiny_model_dirs["clip"], str(tmp_path / "no-such-dino"), device="cpu")
    assert "facebook/dinov2-base" in str(err.value) and "dino =" in str(err.value)


def test_relative_model_folders_resolve_against_base_dir(tiny_model_dirs):
    from storygraph.engine.encoders import Encoders

    base = os.path.dirname(tiny_model_dirs["clip"])
    enc = Encoders.from_pretrained("clip", "dino", device="cpu", base_dir=base)
    assert enc.sources["clip"] == os.path.abspath(tiny_model_dirs["clip"])


def _pipeline_folder(root, components=("transformer", "vae", "scheduler"), make=None):
    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "LTX2ConditionPipeline", "_diffusers_version": "0.42.1"}
    for c in components:
        index[c] = ["diffusers", "X"]
    (root / "model_index.json").write_text(json.dumps(index))
    for c in (components if make is None else make):
        (root / c).mkdir(exist_ok=True)
    return root


def test_models_check_rows(tmp_path, tiny_model_dirs, monkeypatch):
    from storygraph.config import Config
    from storygraph.engine.models import models_check

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    ltx = _pipeline_folder(tmp_path / "story" / "models" / "ltx2")
    cfg = Config.from_dict({"models": {"clip": tiny_model_dirs["clip"], "dino": tiny_model_dirs["dino"],
                                       "ltx2": "models/ltx2", "device": "cpu"}})
    rows = models_check(cfg, story_dir=tmp_path / "story")
    assert [r["name"] for r in rows] == ["clip", "dino", "ltx2"]
    base = {"name", "role", "source", "present", "device", "note"}
    assert all(set(r) == base for r in rows[:2]) and set(rows[2]) == base | {"version"}
    assert all(r["present"] for r in rows), rows
    assert rows[2]["version"] == "2.0" and rows[2]["note"].startswith("LTX-2.0 (dev); ")  # no 2.3/2.5 evidence
    assert rows[2]["source"] == str(ltx) and "3 components" in rows[2]["note"]
    assert {r["device"] for r in rows} == {"cpu"}

    # a pipeline folder with a component missing, an encoder folder without weights, a hub id not cached
    _pipeline_folder(tmp_path / "broken", make=("transformer",))
    empty = tmp_path / "empty-dino"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    rows = models_check({"models": {"clip": "openai/clip-vit-large-patch14", "dino": str(empty),
                                    "ltx2": str(tmp_path / "broken"), "upsampler": str(tmp_path / "nope"),
                                    "device": "cpu"}})
    by = {r["name"]: r for r in rows}
    assert not any(r["present"] for r in rows)
    assert "hf download openai/clip-vit-large-patch14" in by["clip"]["note"]
    assert "weights" in by["dino"]["note"]
    assert "vae" in by["ltx2"]["note"] and "scheduler" in by["ltx2"]["note"]
    assert by["upsampler"]["source"].endswith("nope")
    # a folder without model_index.json is not an LTX-2 pipeline
    rows = models_check({"models": {"ltx2": tiny_model_dirs["dino"] + "-x", "device": "cpu"}})
    assert rows[2]["present"] is False


def test_models_check_finds_hub_ids_in_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from storygraph.engine.models import models_check

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    # the cache layout huggingface_hub writes: refs/main -> snapshots/<commit>/<file>
    for repo, filename in (("facebook/dinov2-base", "config.json"), ("Lightricks/LTX-2", "model_index.json")):
        folder = cache / ("models--" + repo.replace("/", "--"))
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("abc123")
        (folder / "snapshots" / "abc123").mkdir(parents=True)
        (folder / "snapshots" / "abc123" / filename).write_text("{}")
    rows = {r["name"]: r for r in models_check({"models": {"device": "cpu"}})}
    assert rows["dino"]["present"] and rows["dino"]["source"] == "facebook/dinov2-base"
    assert rows["ltx2"]["present"] and "cache" in rows["ltx2"]["note"]
    assert not rows["clip"]["present"] and "hf download" in rows["clip"]["note"]
