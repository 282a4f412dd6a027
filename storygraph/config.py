"""``<story dir>/storygraph.toml``: which models to use, memory weights, generation and scoring settings.

Every key is optional; what the file leaves out keeps the default written here. Each key is declared once, as a
dataclass field with its default and help (``storygraph.domain.setting``): loading checks types and allowed
values against it, and ``storygraph init`` writes the full file from it, every key with its help above it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from .domain import MEMORY_MODES, MemoryParams, Scores, setting
from .errors import InvalidInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "storygraph.toml"


@dataclass(frozen=True)
class ModelsConfig:
    clip: str = setting("openai/clip-vit-large-patch14", "CLIP: a folder (relative to the story folder) or hub id")
    dino: str = setting("facebook/dinov2-base", "DINOv2: a folder or hub id")
    ltx2: str = setting("Lightricks/LTX-2", "LTX-2 in diffusers form: a folder or hub id")
    upsampler: str = setting("", "latent upsampler for the optional second stage; empty: one stage")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    offload: str = setting("", "CPU offload of the generator", expected='"", "model" or "sequential"',
                           choices=("", "model", "sequential"))
    vae_tiling: bool = setting(False, "decode the video in tiles (less memory, a little slower)")
    preset: str = setting("distilled", "sampling preset: distilled (8 steps, no guidance), full (the dev model's "
                          "recipe for its version: CFG, STG, modality guidance) or auto (the checkpoint's variant)",
                          expected='"distilled", "full" or "auto"', choices=("distilled", "full", "auto"))
    ic_lora: str = setting("", "IC-LoRA for reference-mode memory (e.g. LTX-2.3's Ingredients): a .safetensors file "
                           "or a folder holding one; empty: no reference mode")
    memory_cap_gib: float = setting(0.0, "GPU memory the story may use, in GiB (0: the whole card); the generator "
                                    "places and streams its parts to fit, and steps down on out-of-memory",
                                    expected="a number of GiB from 0 to 4096 (0: no cap)", lo=0, hi=4096)
    text_encoder: str = setting("auto", "where the text encoder waits between prompts: auto (on the GPU when "
                                "everything fits beside the transformer, else streamed from the CPU), gpu, stream",
                                expected='"auto", "gpu" or "stream"', choices=("auto", "gpu", "stream"))
    encoder_compile: bool = setting(False, "torch.compile the CLIP and DINOv2 image towers (CUDA)")
    encoder_cuda_graphs: bool = setting(False, "replay the CLIP and DINOv2 image towers as CUDA graphs (CUDA)")
    encoder_fp8: str = setting("", "float8 linear layers in the image towers (CUDA, Hopper)",
                               expected='"", "row" or "tensor"', choices=("", "row", "tensor"))


_BEST_TAKE_BY = (*Scores.names(), "mean")
_CONTINUOUS_MODES = ("auto", *MEMORY_MODES)
_CUT_MODES = ("auto", *(m for m in MEMORY_MODES if m != "extend"))


@dataclass(frozen=True)
class EngineConfig:
    takes: int = setting(1, "takes per scene; the best continues the timeline")
    best_take_by: str = setting("identity", "the score that picks the best take; mean: of identity, text alignment "
                                "and transition smoothness", expected="one of: " + ", ".join(_BEST_TAKE_BY),
                                choices=_BEST_TAKE_BY)
    observe_frames: int = setting(8, "frames the observer samples besides the first and the last")
    extension_frames: int = setting(9, "parent frames given to a continuous transition")
    memory_continuous: str = setting("extend", "how memory reaches the model after a continuous transition: extend "
                                     "(the parent's last frames open the clip; characters it did not show come as "
                                     "context), or context, reference, keyframe (with the extension)",
                                     expected="one of: " + ", ".join(_CONTINUOUS_MODES), choices=_CONTINUOUS_MODES)
    memory_cut: str = setting("auto", "how memory reaches the model after a cut (and in an opening scene): context "
                              "(clean tokens before the clip, never shown), reference (an IC-LoRA reference sheet), "
                              "keyframe (a frame inside the clip); auto: reference with an ic_lora, else context",
                              expected="one of: " + ", ".join(_CUT_MODES), choices=_CUT_MODES)
    memory_time_skip: str = setting("auto", "how memory reaches the model after a time skip (as memory_cut)",
                                    expected="one of: " + ", ".join(_CUT_MODES), choices=_CUT_MODES)
    context_downscale: int = setting(2, "context memory at 1/d of the frame's width and height (d² fewer tokens; "
                                     "2: a 768x512 memory costs 96 tokens instead of 384)",
                                     expected="1, 2 or 4", choices=(1, 2, 4))
    max_context: int = setting(4, "context memories per scene at most (one per character, best first)",
                               expected="an integer from 1 to 16", lo=1, hi=16)
    reference_views: int = setting(2, "a character's best appearances in its cell of a reference sheet",
                                   expected="an integer from 1 to 4", lo=1, hi=4)
    reference_loop: bool = setting(True, "give the reference sheet as a static video the clip's length (as the "
                                   "Ingredients IC-LoRA was trained; doubles the tokens) instead of one frame")
    keyframe_strength: float = setting(0.6, "strength of a memory in keyframe mode after a cut")
    time_skip_strength: float = setting(0.5, "strength of a memory in keyframe mode after a time skip")
    keyframe_index: int = setting(0, "output frame of memory in keyframe mode (0: the shot opens on it)")
    max_keyframes: int = setting(4, "keyframe memories per scene at most")
    look_strength: float = setting(0.2, "the parent's last frame across a cut with no memory (0: off)")
    extension_strength: float = setting(1.0, "strength of the parent's frames on a continuous transition")
    retrieve_k: int = setting(4, "prior appearances retrieved per character")
    index_save_every: int = setting(25, "scenes between vector index saves; the graph fills any gap on open")
    media_writer: str = setting("background", "background: takes' media are written while the next take or scene "
                                "generates (a take is committed once its files are on disk); inline: before going on",
                                expected='"background" or "inline"', choices=("background", "inline"))
    prompt_template: str = setting("{motion} {actors} {environment} {lighting} {camera}",
                                   "the order of the prompt's parts")


@dataclass(frozen=True)
class StoryConfig:
    reference_folders: tuple = setting((), "folders reference images may come from besides the story file's folder "
                                           "tree (absolute, or relative to the story folder)")

    def reference_roots(self, story_dir) -> tuple[Path, ...]:
        """The folders, absolute (relative ones against ``story_dir``)."""
        return tuple(Path(story_dir, f).resolve() for f in self.reference_folders)


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    memory: MemoryParams = field(default_factory=MemoryParams)
    engine: EngineConfig = field(default_factory=EngineConfig)
    story: StoryConfig = field(default_factory=StoryConfig)

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
            section = dict(section)
            known = {x.name: x for x in fields(default)}
            for key, value in section.items():
                if key not in known:
                    raise ConfigError(f"{where}: [{f.name}] has no key {key!r} (known: {', '.join(known)})")
                want = type(getattr(default, key))
                if want is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if want is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
                    value = section[key] = tuple(value)
                if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                    kind = "a list of strings" if want is tuple else want.__name__
                    raise ConfigError(f"{where}: [{f.name}] {key} must be {kind}, got {value!r}")
                declared = known[key].metadata.get("setting")
                if declared is not None and not declared.allows(value):
                    raise ConfigError(f"{where}: [{f.name}] {key} must be {declared.expected}, got {value!r}")
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
            section = getattr(self, f.name)
            for key in fields(section):
                declared = key.metadata.get("setting")
                if declared is not None:
                    lines.append(f"# {declared.help}")
                lines.append(f"{key.name} = {_toml_value(getattr(section, key.name))}")
            lines.append("")
        return "\n".join(lines)

    def save(self, story_dir) -> Path:
        path = Path(story_dir) / CONFIG_NAME
        path.write_text(self.to_toml(), encoding="utf-8")
        return path


class ConfigError(InvalidInput, ValueError):
    """``storygraph.toml`` cannot be read or names a key, section or type it should not."""


def _toml_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
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
