"""Which models a story is configured with, whether their files are here, and where they would run.

``models_check(config)`` backs ``storygraph models check``. It reads files only: no model is loaded
and nothing is downloaded. A local folder is checked for the files ``from_pretrained`` needs; a hub id
is looked up in the Hugging Face cache (what ``HF_HUB_OFFLINE=1`` would let the loaders use).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from .encoders import download_hint, looks_like_hub_id, resolve_source

_ROLES = {
    "clip": "image/text encoder (CLIP)",
    "dino": "identity encoder (DINOv2)",
    "ltx2": "video generator (LTX-2, diffusers)",
    "upsampler": "latent upsampler (LTX-2, diffusers)",
}
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _models_section(config: Any) -> dict:
    """``Config``, ``ModelsConfig``, ``{"models": {...}}`` or a plain ``{"clip": ...}`` mapping -> dict."""
    if config is None:
        from ..config import ModelsConfig

        config = ModelsConfig()
    models = config.get("models", config) if isinstance(config, dict) else getattr(config, "models", config)
    if isinstance(models, dict):
        out = dict(models)
    else:
        from dataclasses import asdict, is_dataclass

        out = asdict(models) if is_dataclass(models) else dict(vars(models))
    from ..config import ModelsConfig

    defaults = ModelsConfig()
    for key in ("clip", "dino", "ltx2"):
        out.setdefault(key, getattr(defaults, key))
    out.setdefault("device", "auto")
    return out


def _device(setting: Optional[str]) -> str:
    from ..config import resolve_device

    return resolve_device(setting or "auto")


def _check_encoder_folder(folder: Path, role: str) -> tuple[bool, str]:
    missing = []
    if not (folder / "config.json").exists():
        missing.append("config.json")
    if not any((folder / w).exists() for w in _WEIGHTS):
        missing.append("weights (model.safetensors)")
    if not (folder / "preprocessor_config.json").exists():
        missing.append("preprocessor_config.json")
    if role == "clip" and not any((folder / t).exists() for t in ("tokenizer.json", "vocab.json")):
        missing.append("tokenizer (tokenizer.json or vocab.json)")
    if missing:
        return False, "folder lacks " + ", ".join(missing)
    return True, "local folder"


def _check_pipeline_folder(folder: Path) -> tuple[bool, str]:
    index = folder / "model_index.json"
    if not index.exists():
        # a single-model folder (e.g. a latent upsampler) is loadable on its own
        if (folder / "config.json").exists():
            return True, "local folder (single model)"
        return False, "folder lacks model_index.json (not a diffusers pipeline folder)"
    try:
        spec = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, f"model_index.json unreadable: {exc}"
    components = [k for k, v in spec.items()
                  if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None]
    lacking = [k for k in components if not (folder / k).is_dir()]
    if lacking:
        return False, f"{spec.get('_class_name', 'pipeline')}: component folder(s) missing: {', '.join(lacking)}"
    return True, f"{spec.get('_class_name', 'pipeline')} with {len(components)} components"


def _in_hub_cache(repo_id: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    try:
        hit = try_to_load_from_cache(repo_id, filename)
    except Exception:  # an id the hub would reject counts as absent
        return False
    return isinstance(hit, str) and os.path.exists(hit)


def check_model(name: str, source: str, device: str, base_dir: Optional[Union[str, os.PathLike]] = None) -> dict:
    """One row: name, role, source, present, device, note."""
    role = _ROLES.get(name, name)
    resolved = resolve_source(source, base_dir)
    is_pipeline = name in ("ltx2", "upsampler")
    if os.path.isdir(resolved):
        folder = Path(resolved)
        present, note = _check_pipeline_folder(folder) if is_pipeline else _check_encoder_folder(folder, name)
    elif looks_like_hub_id(resolved):
        files = ("model_index.json", "config.json") if is_pipeline else ("config.json",)
        present = any(_in_hub_cache(resolved, f) for f in files)
        note = "in the Hugging Face cache" if present else "not downloaded: " + _first_command(name, resolved)
    else:
        present, note = False, "no such folder: " + _first_command(name, resolved)
    if present and not is_pipeline:
        note += "; bf16" if device.startswith("cuda") else "; float32"
    return {"name": name, "role": role, "source": resolved, "present": bool(present), "device": device, "note": note}


def _first_command(name: str, source: str) -> str:
    hint = download_hint(name, source).splitlines()
    cmd = next((ln.strip() for ln in hint if ln.strip().startswith("hf download")), "")
    key = f"models.{name}"
    return f"{cmd} and set {key}" if cmd else f"set {key}"


def models_check(config: Any = None, story_dir: Optional[Union[str, os.PathLike]] = None) -> list[dict]:
    """Rows for every configured model: the encoders (clip, dino), the generator (ltx2), the upsampler if set.

    ``config``: a ``storygraph.config.Config`` (or its ``models`` section, or the parsed TOML dict);
    relative folders resolve against ``story_dir``.
    """
    models = _models_section(config)
    device = _device(models.get("device"))
    rows = [check_model(name, str(models[name]), device, story_dir) for name in ("clip", "dino", "ltx2")]
    if models.get("upsampler"):
        rows.append(check_model("upsampler", str(models["upsampler"]), device, story_dir))
    return rows
