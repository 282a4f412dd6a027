"""LTX-2.0, 2.3 and 2.5 checkpoints: tiny ones of each built from configs, saved, loaded back through
``from_pretrained``, named from their JSON files alone, run with their version's preset."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from storygraph.engine.generators import GenerationRequest, LTX2Generator, detect, preset_for  # noqa: E402
from storygraph.engine.generators.versions import detect_pipe  # noqa: E402

VERSIONS = ("2.0", "2.3", "2.5")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from storygraph.engine.tiny.ltx2 import make_ltx2

    torch.set_num_threads(min(2, torch.get_num_threads()))
    root = tmp_path_factory.mktemp("versions")
    out = {v: make_ltx2(root / f"ltx-{v}", version=v, with_upsampler=False) for v in VERSIONS}
    out["2.3-distilled"] = make_ltx2(root / "ltx-2.3-distilled", version="2.3", with_upsampler=False, distilled=True)
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_a_folder_is_named_by_its_json_files(folders, version):
    c = detect(folders[version])
    assert (c.version, c.variant) == (version, "dev")
    index = json.loads((folders[version] / "model_index.json").read_text())
    text_encoder = index["text_encoder"][1]
    assert text_encoder == ("Gemma4UnifiedForConditionalGeneration" if version == "2.5"
                            else "Gemma3ForConditionalGeneration")
    assert (index.get("duration_head", [None, None])[0] is not None) == (version == "2.5")
    if version == "2.5":
        assert any("Gemma 4" in r for r in c.reasons) and "duration_head component" in c.reasons
    assert detect(folders["2.3-distilled"]).variant == "distilled"


def test_only_json_is_read(tmp_path, folders):
    """A folder of config files without a single weight is named just the same."""
    import shutil

    for version in VERSIONS:
        copy = tmp_path / version
        shutil.copytree(folders[version], copy, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        assert detect(copy).version == version
    with pytest.raises(ValueError, match="not an LTX-2 diffusers folder"):
        detect(tmp_path / "nothing")


@pytest.mark.parametrize("version", VERSIONS)
def test_each_version_generates_with_its_preset(folders, version):
    gen = LTX2Generator.from_pretrained(folders[version], device="cpu")
    assert gen.checkpoint.version == version == detect_pipe(gen.pipe).version
    assert gen.preset.version == version and gen.preset.use_cross_timestep == (version != "2.0")
    res = gen.generate(GenerationRequest(prompt="a man walks in the rain", width=64, height=64, frames=9, steps=2,
                                         seed=0))
    assert res.frames.shape == (9, 64, 64, 3) and res.settings["ltx_version"] == version
    assert res.audio is not None and res.audio.sample_rate == (16000 if version == "2.0" else 48000)


def test_the_2_5_duration_head_survives_loading(folders):
    gen = LTX2Generator.from_pretrained(folders["2.5"], device="cpu")
    assert type(gen.pipe.duration_head).__name__ == "LTX2DurationHead"
    assert gen.pipe.text_encoder.config.model_type == "gemma4_unified"


def test_presets_per_version():
    """Lightricks' pipeline constants: dev recipes differ only in steps and the STG block (and CRF for 2.5)."""
    for v, steps, block, crf in (("2.0", 40, 29, 33), ("2.3", 30, 28, 33), ("2.5", 30, 28, 18)):
        full = preset_for(v, "full")
        assert (full.steps, full.guidance, full.audio_guidance, full.image_crf) == (steps, 3.0, 7.0, crf)
        assert full.call_kwargs == {"stg_scale": 1.0, "modality_scale": 3.0, "guidance_rescale": 0.7,
                                    "audio_stg_scale": 1.0, "audio_modality_scale": 3.0, "audio_guidance_rescale": 0.7,
                                    "spatio_temporal_guidance_blocks": [block]}
        distilled = preset_for(v, "distilled")
        assert (distilled.steps, distilled.guidance, distilled.audio_guidance, distilled.image_crf) == (8, 1.0, 1.0, crf)
        assert distilled.call_kwargs["stg_scale"] == 0.0 and distilled.call_kwargs["modality_scale"] == 1.0
        assert distilled.use_cross_timestep == full.use_cross_timestep == (v != "2.0")
    with pytest.raises(ValueError):
        preset_for("2.4", "full")


def test_auto_preset_follows_the_checkpoints_variant(folders):
    assert LTX2Generator.from_pretrained(folders["2.3-distilled"], device="cpu", preset="auto").preset.name == "distilled"
    assert LTX2Generator.from_pretrained(folders["2.3"], device="cpu", preset="auto").preset.name == "full"


def test_full_preset_runs_every_guidance(folders):
    """The dev recipe at tiny size: CFG, STG on the version's block, modality guidance, audio guidance."""
    calls = []
    gen = LTX2Generator.from_pretrained(folders["2.3"], device="cpu", preset="full")
    handle = gen.pipe.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k["hidden_states"].shape[0]),
                                                            with_kwargs=True)
    try:
        res = gen.generate(gen.preset.request("a man on a boat", negative_prompt="blurry", width=64, height=64,
                                              frames=9, steps=2))
    finally:
        handle.remove()
    assert res.settings["preset"] == "full" and res.frames.shape == (9, 64, 64, 3)
    # per step: the conditional and unconditional batch (CFG) plus the STG and the modality-isolated passes
    assert len(calls) == 2 * 3 and calls[0] == 2


def test_models_check_names_each_version(folders, tmp_path):
    from support import storygraph_cli

    for version in VERSIONS:
        d = tmp_path / version
        d.mkdir()
        (d / "storygraph.toml").write_text(f'[models]\nltx2 = "{folders[version]}"\ndevice = "cpu"\n',
                                           encoding="utf-8")
        r = storygraph_cli("models", "check", "--dir", d, timeout=120)
        row = next(line for line in r.stdout.splitlines() if line.lstrip("│ ").startswith("ltx2"))
        assert f"LTX-{version}" in row, r.stdout


def test_models_check_reports_the_ic_lora(folders, tmp_path):
    from storygraph.config import Config
    from storygraph.engine.models import models_check
    from storygraph.engine.tiny.ltx2 import make_ic_lora

    lora = make_ic_lora(folders["2.3"], tmp_path / "lora", reference_downscale_factor=2)
    rows = {r["name"]: r for r in models_check(Config.from_dict({"models": {"ltx2": str(folders["2.3"]),
                                                                           "ic_lora": str(lora.parent)}}))}
    assert rows["ltx2"]["version"] == "2.3"
    assert rows["ic_lora"]["present"] and rows["ic_lora"]["note"] == "reference_downscale_factor 2"
    missing = models_check(Config.from_dict({"models": {"ic_lora": str(tmp_path / "nope.safetensors")}}))
    assert not [r for r in missing if r["name"] == "ic_lora"][0]["present"]
