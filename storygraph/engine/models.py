"""A story's models: which are configured, whether their files are here, and the registry that loads them.

``models_check(config)`` backs ``storygraph models check``. It reads files only: no model is loaded
and nothing is downloaded; an LTX-2 folder's version (2.0, 2.3, 2.5) and variant are read from its JSON files. A local folder is checked for the files ``from_pretrained`` needs; a hub id
is looked up in the Hugging Face cache (what ``HF_HUB_OFFLINE=1`` would let the loaders use).

:class:`ModelRegistry` is the engine's access to them: the LTX-2 generator, the CLIP and DINOv2 encoders and the
observer built on them, each loaded with ``from_pretrained`` on first use (a story that is only edited or
queried never loads a model), relative folders resolved against the story folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..errors import StorygraphError
from .encoders import download_hint, looks_like_hub_id, resolve_source

_ROLES = {
    "clip": "image/text encoder (CLIP)",
    "dino": "identity encoder (DINOv2)",
    "ltx2": "video generator (LTX-2, diffusers)",
    "upsampler": "latent upsampler (LTX-2, diffusers)",
    "ic_lora": "IC-LoRA for reference memory",
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


def _check_ic_lora(source: str, base_dir) -> dict:
    from .generators.ltx2 import read_reference_downscale_factor, resolve_ic_lora

    try:
        path = resolve_ic_lora(source, base_dir)
    except StorygraphError as e:
        return {"source": source, "present": False, "note": str(e).splitlines()[0]}
    try:
        factor = read_reference_downscale_factor(path)
    except Exception as e:  # noqa: BLE001 - an unreadable file is reported, not raised
        return {"source": str(path), "present": False, "note": f"not a readable safetensors file: {e}"}
    return {"source": str(path), "present": True, "note": f"reference_downscale_factor {factor}"}


def check_model(name: str, source: str, device: str, base_dir: Optional[Union[str, os.PathLike]] = None) -> dict:
    """One row: name, role, source, present, device, note (and ``version`` for an LTX-2 folder)."""
    role = _ROLES.get(name, name)
    if name == "ic_lora":
        return {"name": name, "role": role, "device": device, **_check_ic_lora(source, base_dir)}
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
    row = {"name": name, "role": role, "source": resolved, "present": bool(present), "device": device, "note": note}
    if name == "ltx2" and present and os.path.isdir(resolved):
        from .generators.versions import detect

        try:
            checkpoint = detect(resolved)
        except ValueError:
            pass
        else:
            row["version"] = checkpoint.version
            row["note"] = f"LTX-{checkpoint.version} ({checkpoint.variant}); {note}; {'; '.join(checkpoint.reasons)}"
    return row


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
    for name in ("upsampler", "ic_lora"):
        if models.get(name):
            rows.append(check_model(name, str(models[name]), device, story_dir))
    return rows


class ModelRegistry:
    """The generator, encoders and observer of one story, loaded lazily from its ``[models]`` settings.

    ``generator`` / ``encoders``: already built ones to use instead (tests, benchmarks, several engines sharing
    one model). ``reference_root``: called when the observer is built, for the folder relative reference image
    paths resolve against (the story file's folder).
    """

    def __init__(self, config, story_dir: Union[str, os.PathLike], reference_root: Callable[[], str], *,
                 generator=None, encoders=None):
        self.config = config
        self.story_dir = Path(story_dir)
        self.reference_root = reference_root
        self._generator = generator
        self._encoders = encoders
        self._observer = None
        self.load_s: dict[str, float] = {}  # seconds each model took to load, by name

    @property
    def device(self) -> str:
        return _device(self.config.models.device)

    def resolve(self, source: str) -> str:
        """A model source as configured: a folder relative to the story folder if one is there, else as given."""
        if not source:
            return source
        p = Path(source).expanduser()
        if not p.is_absolute() and (self.story_dir / p).exists():
            return str(self.story_dir / p)
        return str(p) if p.exists() else source

    def _cap_memory(self) -> None:
        """Apply ``memory_cap_gib`` before the first model reaches the GPU, so every allocation counts."""
        if self.config.models.memory_cap_gib and self.device.startswith("cuda"):
            from .generators.gpu_memory import set_memory_cap

            set_memory_cap(self.device, self.config.models.memory_cap_gib)

    @property
    def encoders(self):
        if self._encoders is None:
            from .encoders import Encoders

            m = self.config.models
            self._cap_memory()
            t = time.perf_counter()
            self._encoders = Encoders.from_pretrained(
                clip=self.resolve(m.clip), dino=self.resolve(m.dino), device=self.device,
                compile=m.encoder_compile, cuda_graphs=m.encoder_cuda_graphs, fp8=m.encoder_fp8 or False)
            self.load_s["encoders"] = time.perf_counter() - t
        return self._encoders

    @property
    def generator(self):
        if self._generator is None:
            from .generators.ltx2 import LTX2Generator

            m = self.config.models
            self._cap_memory()
            t = time.perf_counter()
            self._generator = LTX2Generator.from_pretrained(
                self.resolve(m.ltx2), device=self.device, offload=m.offload or None, vae_tiling=m.vae_tiling,
                upsampler=self.resolve(m.upsampler) or None, preset=m.preset, ic_lora=m.ic_lora or None,
                base_dir=self.story_dir, memory_cap_gib=m.memory_cap_gib, text_encoder=m.text_encoder)
            self.load_s["generator"] = time.perf_counter() - t
        return self._generator

    @property
    def observer(self):
        if self._observer is None:
            from .observer import Observer

            self._observer = Observer(self.encoders, samples=self.config.engine.observe_frames,
                                      params=self.config.memory, reference_root=self.reference_root())
        return self._observer
