"""CLIP (image and text) and DINOv2 (CLS) embeddings through transformers' own model classes.

Models load with ``from_pretrained`` from a local folder or a hub id (defaults
``openai/clip-vit-large-patch14``, 768-d, and ``facebook/dinov2-base``, 768-d CLS token). With
``HF_HUB_OFFLINE=1`` only local folders and the Hugging Face cache are looked at. A model that cannot be
found raises :class:`ModelNotFound`, whose message says what to download and which ``storygraph.toml``
key (``models.clip`` / ``models.dino``) to point at it.

Precision: bf16 on CUDA, float32 on CPU; everything runs under ``torch.inference_mode()`` with
scaled-dot-product attention. Preprocessing lives in one place, :class:`ImagePrep`: it reads the model's
``preprocessor_config.json`` and does what the HF image processors do (shortest-edge bicubic resize with
antialiasing, centre crop, rescale, normalise) as tensor ops on the model's device, so frames go to the
GPU once as uint8. Outputs are L2-normalised float32 numpy arrays.

Speed options for CUDA (off by default): ``compile=True`` compiles the image towers' transformer
blocks with ``torch.compile``; ``cuda_graphs=True`` replays the towers as CUDA graphs (small batches,
such as one observed clip, are launch-bound); ``fp8=True`` replaces the transformer blocks' linear
layers by float8 (e4m3) matrix products with per-row activation and per-channel weight scales (Hopper
and Ada GPUs), which changes embeddings slightly (cosine to the bf16 result: see ``bench/observer.py``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import Unavailable
from .arrays import rgb_frames

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DINO = "facebook/dinov2-base"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

_ROLE_TEXT = {
    "clip": ("CLIP", "models.clip", DEFAULT_CLIP),
    "dino": ("DINOv2", "models.dino", DEFAULT_DINO),
    "ltx2": ("LTX-2", "models.ltx2", "Lightricks/LTX-2"),
    "ic_lora": ("IC-LoRA", "models.ic_lora", "Lightricks/LTX-2.3-22b-IC-LoRA-Ingredients"),
}


class ModelNotFound(Unavailable, RuntimeError):
    """A configured model is neither a local folder nor obtainable from the hub (or its cache)."""

    def __init__(self, role: str, source: str, detail: str = ""):
        self.role = role
        self.source = source
        super().__init__(download_hint(role, source, detail))


def download_hint(role: str, source: str, detail: str = "") -> str:
    """The message that tells a user how to get a missing model and where to point the config."""
    label, key, default = _ROLE_TEXT.get(role, (role, f"models.{role}", source))
    hub_id = source if looks_like_hub_id(source) else default
    local = f"models/{hub_id.split('/')[-1]}"
    section, name = key.split(".")
    offline = " (HF_HUB_OFFLINE is set: only local folders and the Hugging Face cache are used)" if hub_offline() else ""
    lines = [
        f"{label} model {source!r} not found{offline}.",
        "Download it, e.g.:",
        f"  hf download {hub_id} --local-dir {local}",
        f"  (older huggingface_hub: huggingface-cli download {hub_id} --local-dir {local})",
        "then point the config at it in <story dir>/storygraph.toml:",
        f"  [{section}]",
        f'  {name} = "{local}"',
    ]
    if detail:
        lines.append(f"cause: {detail}")
    return "\n".join(lines)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(str(source))) and not str(source).startswith(".")


def resolve_source(source: Union[str, os.PathLike], base_dir: Optional[Union[str, os.PathLike]] = None) -> str:
    """A local folder (made absolute, relative paths against ``base_dir``) if one exists, else ``source``."""
    s = os.path.expanduser(str(source))
    candidates = [s] if os.path.isabs(s) else ([os.path.join(str(base_dir), s)] if base_dir else []) + [s]
    for c in candidates:
        if os.path.isdir(c):
            return os.path.abspath(c)
    return s


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(role: str, cls, source: str, **kwargs):
    """``cls.from_pretrained(source)`` with a clear :class:`ModelNotFound` when it cannot be had."""
    if not os.path.isdir(source) and not looks_like_hub_id(source):
        raise ModelNotFound(role, source, "no such folder")
    if hub_offline():
        kwargs.setdefault("local_files_only", True)
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:  # hub errors derive from these (HfHubHTTPError, HFValidationError)
        if os.path.isdir(source) and (Path(source) / "config.json").exists():
            raise  # the files are there but broken: not a missing model
        raise ModelNotFound(role, source, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _read_json(role: str, source: str, filename: str) -> dict:
    from transformers.utils import cached_file

    if os.path.isdir(source):
        path = os.path.join(source, filename)
        if not os.path.exists(path):
            raise ModelNotFound(role, source, f"{filename} missing in the folder")
    else:
        try:
            path = cached_file(source, filename, local_files_only=hub_offline())
        except (OSError, ValueError) as exc:
            raise ModelNotFound(role, source, f"{type(exc).__name__}") from exc
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class ImagePrep:
    """The image processor of one model as tensor ops: what ``preprocessor_config.json`` asks for."""

    shortest_edge: Optional[int]  # resize so the short side has this length (aspect kept) ...
    resize_hw: Optional[tuple[int, int]]  # ... or to exactly (height, width)
    crop_hw: Optional[tuple[int, int]]
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: dict) -> "ImagePrep":
        shortest, resize_hw = None, None
        if cfg.get("do_resize", True):
            size = cfg.get("size", 224)
            if isinstance(size, int):
                shortest = size
            elif "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
            else:
                resize_hw = (int(size["height"]), int(size["width"]))
        crop = None
        if cfg.get("do_center_crop", False):
            c = cfg.get("crop_size", 224)
            crop = (c, c) if isinstance(c, int) else (int(c["height"]), int(c["width"]))
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        if cfg.get("do_normalize", True):
            mean = tuple(float(v) for v in cfg.get("image_mean", (0.5, 0.5, 0.5)))
            std = tuple(float(v) for v in cfg.get("image_std", (0.5, 0.5, 0.5)))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(shortest, resize_hw, crop, rescale, mean, std)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        return self.resized_hw(h, w)

    def resized_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.resize_hw:
            return self.resize_hw
        if self.shortest_edge:
            s = self.shortest_edge
            # transformers' get_resize_output_image_size(default_to_square=False)
            return (int(s * h / w), s) if w <= h else (s, int(s * w / h))
        return h, w

    def __call__(self, images, dtype=None):
        """uint8 tensor (N, H, W, 3) on any device -> normalised (N, 3, h, w) tensor of ``dtype``."""
        import torch
        import torch.nn.functional as F

        n, h, w, _ = images.shape
        x = images.permute(0, 3, 1, 2).float()
        rh, rw = self.resized_hw(h, w)
        if (rh, rw) != (h, w):
            # PIL's BICUBIC as the HF processors use it: antialiased, a = -0.5, horizontal pass then
            # vertical pass, each rounded to uint8
            if rw != w:
                x = F.interpolate(x, size=(h, rw), mode="bicubic", antialias=True, align_corners=False)
                x = x.round_().clamp_(0, 255)
            if rh != h:
                x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
                x = x.round_().clamp_(0, 255)
        if self.crop_hw:
            ch, cw = self.crop_hw
            if ch > rh or cw > rw:  # pad with zeros like transformers' center_crop
                pt, pl = -(-(max(ch, rh) - rh) // 2), -(-(max(cw, rw) - rw) // 2)
                x = F.pad(x, (pl, max(cw, rw) - rw - pl, pt, max(ch, rh) - rh - pt))
                rh, rw = x.shape[-2:]
            top, left = (rh - ch) // 2, (rw - cw) // 2
            x = x[:, :, top:top + ch, left:left + cw]
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x * self.rescale - mean) / std
        return x.to(dtype or torch.float32).contiguous()


# --------------------------------------------------------------------------------------------------
# float8 linear layers (opt-in)


_FP8_LINEAR = None


def _fp8_linear_class():
    """The float8 linear module class, built once (torch is imported lazily; one class keeps
    ``torch.compile`` from recompiling for every layer)."""
    global _FP8_LINEAR
    if _FP8_LINEAR is not None:
        return _FP8_LINEAR
    import torch

    class Fp8Linear(torch.nn.Module):
        """``y = x W^T + b`` through ``torch._scaled_mm`` in float8 e4m3.

        ``granularity="row"``: weights scaled per output channel, activations per row at run time;
        ``"tensor"``: one scale for each. Under ``torch.compile`` the activation quantisation fuses into
        the op that produced ``x``.
        """

        FMAX = 448.0

        def __init__(self, linear: torch.nn.Linear, granularity: str = "row"):
            super().__init__()
            if granularity not in ("row", "tensor"):
                raise ValueError("granularity must be 'row' or 'tensor'")
            self.rowwise = granularity == "row"
            w = linear.weight.detach().float()
            amax = w.abs().amax(dim=1, keepdim=True) if self.rowwise else w.abs().amax()
            scale = (amax / self.FMAX).clamp_min(1e-12)
            self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn).contiguous())
            self.register_buffer("weight_scale", scale.t().contiguous() if self.rowwise else scale)
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))
            self.out_features = linear.out_features

        def forward(self, x):
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            amax = x2.abs().amax(dim=1, keepdim=True) if self.rowwise else x2.abs().amax()
            scale = (amax.float() / self.FMAX).clamp_min(1e-12)
            xq = (x2.float() / scale).clamp(-self.FMAX, self.FMAX).to(torch.float8_e4m3fn)
            y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                                 bias=self.bias, out_dtype=torch.bfloat16, use_fast_accum=x.is_cuda)
            return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    _FP8_LINEAR = Fp8Linear
    return Fp8Linear


def to_fp8(module, granularity: str = "row") -> int:
    """Replace every ``nn.Linear`` under ``module`` by a float8 one; returns how many were replaced."""
    import torch

    cls = _fp8_linear_class()
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, cls(child, granularity))
            count += 1
        else:
            count += to_fp8(child, granularity)
    return count


class _GraphCache:
    """Calls ``fn`` through CUDA graphs captured per (shape, dtype) of its one tensor argument."""

    def __init__(self, fn, max_shapes: int = 8):
        self.fn = fn
        self.max_shapes = max_shapes
        self.graphs: dict = {}

    def __call__(self, x):
        import torch

        key = (tuple(x.shape), x.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_shapes:
                return self.fn(x)
            static_x = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside capture: kernel selection, compilation, workspaces
                    self.fn(static_x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = self.fn(static_x)
            entry = self.graphs[key] = (graph, static_x, static_y)
        graph, static_x, static_y = entry
        static_x.copy_(x)
        graph.replay()
        return static_y.clone()


# --------------------------------------------------------------------------------------------------
# Encoders


class Encoders:
    """CLIP and DINOv2 on one device. Build with :meth:`from_pretrained`."""

    def __init__(self, clip_model, dino_model, tokenizer, clip_prep: ImagePrep, dino_prep: ImagePrep,
                 device: str, dtype, batch_size: int = 64, sources: Optional[dict] = None):
        self.clip_model = clip_model
        self.dino_model = dino_model
        self.tokenizer = tokenizer
        self.clip_prep = clip_prep
        self.dino_prep = dino_prep
        self.device = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.sources = sources or {}
        self.clip_dim = int(clip_model.config.projection_dim)
        self.dino_dim = int(dino_model.config.hidden_size)
        self._clip_fn = self._clip_image_eager
        self._dino_fn = self._dino_eager
        self.fp8 = False
        self.compiled = False

    # ---- construction

    @classmethod
    def from_pretrained(cls, clip: Union[str, os.PathLike] = DEFAULT_CLIP, dino: Union[str, os.PathLike] = DEFAULT_DINO,
             device: Optional[str] = None, *, base_dir: Optional[Union[str, os.PathLike]] = None,
             dtype: Any = None, batch_size: int = 64, compile: bool = False, compile_mode: Optional[str] = None,
             fp8: Union[bool, str] = False, cuda_graphs: bool = False, attn_implementation: str = "sdpa") -> "Encoders":
        """Load both models with ``from_pretrained``; relative folders resolve against ``base_dir``.

        ``device``: "cuda", "cpu", ... (default: CUDA when available). ``dtype``: default bf16 on CUDA,
        float32 elsewhere. ``batch_size``: images per forward pass. ``fp8``, ``compile``, ``cuda_graphs``:
        see :meth:`enable_fp8`, :meth:`enable_compile`, :meth:`enable_cuda_graphs`.
        """
        import torch
        from transformers import AutoTokenizer, CLIPModel, Dinov2Model

        device = device or default_device()
        if dtype is None:
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        clip_src = resolve_source(clip, base_dir)
        dino_src = resolve_source(dino, base_dir)
        kw = dict(dtype=dtype, attn_implementation=attn_implementation)
        clip_model = _load("clip", CLIPModel, clip_src, **kw).to(device).eval()
        dino_model = _load("dino", Dinov2Model, dino_src, **kw).to(device).eval()
        tokenizer = _load("clip", AutoTokenizer, clip_src)
        clip_prep = ImagePrep.from_config(_read_json("clip", clip_src, "preprocessor_config.json"))
        dino_prep = ImagePrep.from_config(_read_json("dino", dino_src, "preprocessor_config.json"))
        enc = cls(clip_model, dino_model, tokenizer, clip_prep, dino_prep, str(device), dtype, batch_size,
                  {"clip": clip_src, "dino": dino_src})
        if fp8:
            enc.enable_fp8(fp8 if isinstance(fp8, str) else "row")
        if compile:
            enc.enable_compile(compile_mode)
        if cuda_graphs:
            enc.enable_cuda_graphs()
        return enc

    def enable_fp8(self, granularity: str = "row", towers: Sequence[str] = ("clip", "dino")) -> int:
        """Float8 linear layers in the image towers' transformer blocks; returns the number replaced.

        Worth it where the matrix products dominate: on an H100 it sped up the ViT-L/14 CLIP tower
        (compiled, 1.26x) but not the ViT-B/14 DINOv2 one (0.97x); ``towers`` picks which to convert.
        """
        n = 0
        if "clip" in towers:
            n += to_fp8(self.clip_model.vision_model.encoder, granularity)
        if "dino" in towers:
            n += to_fp8(self.dino_model.encoder, granularity)
        self.fp8 = granularity
        return n

    def enable_compile(self, mode: Optional[str] = None) -> None:
        """``torch.compile`` each transformer block of both image towers (regional compilation).

        Blocks of one tower share their code, so each tower compiles once and reuses it for every block:
        seconds instead of the minutes a whole-model graph takes, with the same fusions inside a block.
        """
        layers = list(self.clip_model.vision_model.encoder.layers) + list(self.dino_model.encoder.layer)
        for layer in layers:
            layer.compile(mode=mode)
        self.compiled = True

    def enable_cuda_graphs(self, max_shapes: int = 8) -> None:
        """Replay each image tower as a CUDA graph, one captured per input shape (first ``max_shapes``).

        Removes the per-kernel launch cost that dominates small batches (an observed clip is ~10 frames).
        """
        if not self.device.startswith("cuda"):
            return
        self._clip_fn = _GraphCache(self._clip_fn, max_shapes)
        self._dino_fn = _GraphCache(self._dino_fn, max_shapes)

    # ---- device-level forwards (pixel tensors in, normalised embeddings out)

    def _clip_image_eager(self, pixel_values):
        out = self.clip_model.vision_model(pixel_values=pixel_values)
        emb = self.clip_model.visual_projection(out.pooler_output)
        return emb / emb.float().norm(dim=-1, keepdim=True).clamp_min(1e-12).to(emb.dtype)

    def _dino_eager(self, pixel_values):
        out = self.dino_model(pixel_values=pixel_values)
        cls_tok = out.last_hidden_state[:, 0]  # CLS after the final layer norm
        return cls_tok / cls_tok.float().norm(dim=-1, keepdim=True).clamp_min(1e-12).to(cls_tok.dtype)

    def clip_image_forward(self, pixel_values):
        """Preprocessed (N, 3, h, w) tensor on the device -> (N, clip_dim) normalised, model dtype."""
        return self._clip_fn(pixel_values)

    def dino_forward(self, pixel_values):
        return self._dino_fn(pixel_values)

    # ---- preprocessing

    def prepare(self, frames, prep: ImagePrep):
        """Frames (see :func:`.arrays.rgb_frames`) -> one preprocessed tensor on the device, input order kept.

        Frames of one size are stacked and processed together; frames of another size form their own group.
        """
        import torch

        images = rgb_frames(frames)
        if not images:
            raise ValueError("no images to embed")
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        outs, order = [], []
        for shape, idx in groups.items():
            batch = np.stack([images[i] for i in idx]) if len(idx) > 1 else images[idx[0]][None]
            t = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device.startswith("cuda"):
                t = t.pin_memory().to(self.device, non_blocking=True)
            else:
                t = t.to(self.device)
            outs.append(prep(t, self.dtype))
            order.extend(idx)
        x = outs[0] if len(outs) == 1 else torch.cat(outs)
        if order != list(range(len(images))):
            inv = torch.empty(len(order), dtype=torch.long)
            inv[torch.tensor(order)] = torch.arange(len(order))
            x = x[inv.to(x.device)]
        return x

    def _run(self, fn, x):
        import torch

        with torch.inference_mode():
            parts = [fn(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
            y = parts[0] if len(parts) == 1 else torch.cat(parts)
            return y.float().cpu().numpy()

    # ---- public embedding API

    def embed_images(self, frames) -> tuple[np.ndarray, np.ndarray]:
        """Frames -> (clip (N, clip_dim), dino (N, dino_dim)), L2-normalised float32 numpy."""
        return self.embed_clip_images(frames), self.embed_dino_images(frames)

    def embed_clip_images(self, frames) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._run(self.clip_image_forward, self.prepare(frames, self.clip_prep))

    def embed_dino_images(self, frames) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._run(self.dino_forward, self.prepare(frames, self.dino_prep))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, clip_dim) CLIP text embeddings, L2-normalised float32 (longer texts truncated)."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.clip_dim), dtype=np.float32)
        max_len = int(getattr(self.clip_model.config.text_config, "max_position_embeddings", 77))
        outs = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                     max_length=max_len, return_tensors="pt")
                out = self.clip_model.text_model(input_ids=enc["input_ids"].to(self.device),
                                                 attention_mask=enc["attention_mask"].to(self.device))
                emb = self.clip_model.text_projection(out.pooler_output).float()
                outs.append(emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12))
            return torch.cat(outs).cpu().numpy()
