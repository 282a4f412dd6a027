"""``<story dir>/storygraph.toml``: which models to use, memory weights, generation and scoring settings.

Every key is optional; what the file leaves out keeps the default written here (``storygraph init`` writes
the full file so users see every knob).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from .domain import MemoryParams
from .errors import InvalidInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "storygraph.toml"


@dataclass(frozen=True)
class ModelsConfig:
    clip: str = "openai/clip-vit-large-patch14"
    dino: str = "facebook/dinov2-base"
    ltx2: str = "Lightricks/LTX-2"
    upsampler: str = ""  # latent upsampler for the optional second stage; empty: one stage
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    offload: str = ""  # "" | model | sequential
    vae_tiling: bool = False


@dataclass(frozen=True)
class EngineConfig:
    takes: int = 1
    best_take_by: str = "identity"  # identity | text_alignment | transition_smoothness | mean
    observe_frames: int = 8  # uniform samples besides first and last
    extension_frames: int = 9  # parent frames given to a continuous transition
    keyframe_strength: float = 0.6
    time_skip_strength: float = 0.5
    keyframe_index: int = 0
    max_keyframes: int = 4
    look_strength: float = 0.2
    extension_strength: float = 1.0
    retrieve_k: int = 4
    index_save_every: int = 25  # scenes between vector index saves; the graph fills any gap on open
    prompt_template: str = "{motion} {actors} {environment} {lighting} {camera}"


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    memory: MemoryParams = field(default_factory=MemoryParams)
    engine: EngineConfig = field(default_factory=EngineConfig)

    @classmethod
    def load(cls, story_dir) -> "Config":
        path = Path(story_dir) / CONFIG_NAME
        if not path.exists():
            return cls()
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: {e}") from e
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "Config":
        parts = {}
        for f in fields(cls):
            section = data.get(f.name, {})
            default = f.default_factory()
            if not isinstance(section, dict):
                raise ConfigError(f"{where}: [{f.name}] must be a table")
            known = {x.name: x for x in fields(default)}
            for key, value in section.items():
                if key not in known:
                    raise ConfigError(f"{where}: [{f.name}] has no key {key!r} (known: {', '.join(known)})")
                want = type(getattr(default, key))
                if want is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                    raise ConfigError(f"{where}: [{f.name}] {key} must be {want.__name__}, got {value!r}")
            parts[f.name] = replace(default, **section)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}")
        return cls(**parts)

    def with_overrides(self, **sections: dict) -> "Config":
        return replace(self, **{k: replace(getattr(self, k), **v) for k, v in sections.items() if v})

    def to_toml(self) -> str:
        lines = ["# storygraph settings for this story; delete a key to get its default back.", ""]
        for f in fields(self):
            lines.append(f"[{f.name}]")
            for key, value in asdict(getattr(self, f.name)).items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    def save(self, story_dir) -> Path:
        path = Path(story_dir) / CONFIG_NAME
        path.write_text(self.to_toml(), encoding="utf-8")
        return path


class ConfigError(InvalidInput, ValueError):
    """``storygraph.toml`` cannot be read or names a key, section or type it should not."""


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def resolve_device(device: Optional[str]) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device and device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
