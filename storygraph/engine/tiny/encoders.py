"""CLIP and DINOv2 models built from configs with random weights, saved with ``save_pretrained``.

Two uses: ``storygraph demo`` and the tests build *tiny* models on the spot (no weights can be
downloaded there), and the benchmark builds *real-size* ones (the architectures of
``openai/clip-vit-large-patch14`` and ``facebook/dinov2-base`` / ``-large``) to time them. Either way
the folders written here are loaded back through the same ``from_pretrained`` path as real weights.

Random weights prove shapes, plumbing and speed, never quality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from . import mark_random

#: CLIP sizes: ``tiny`` for tests and demos, ``vit-l-14`` the architecture of openai/clip-vit-large-patch14.
CLIP_SIZES = ("tiny", "vit-l-14")
#: DINOv2 sizes: ``tiny``, ``base`` (facebook/dinov2-base, ViT-B/14), ``large`` (facebook/dinov2-large, ViT-L/14).
DINO_SIZES = ("tiny", "base", "large")

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _tokenizer():
    """A byte-level CLIP BPE tokenizer with no merges: every byte is a token, so any text encodes."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def clip_config(size: str = "tiny", vocab_size: int = 514, bos: int = 512, eos: int = 513):
    from transformers import CLIPConfig

    if size == "tiny":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=77)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8)
        proj = 16
    elif size == "vit-l-14":
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    max_position_embeddings=77)
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=224, patch_size=14)
        proj = 768
    else:
        raise ValueError(f"unknown CLIP size {size!r}; one of {CLIP_SIZES}")
    text.update(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
                hidden_act="quick_gelu", projection_dim=proj)
    vision.update(hidden_act="quick_gelu", projection_dim=proj)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)


def dino_config(size: str = "tiny"):
    from transformers import Dinov2Config

    if size == "tiny":
        kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=7, image_size=28)
    elif size == "base":
        kw = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14, image_size=518)
    elif size == "large":
        kw = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=518)
    else:
        raise ValueError(f"unknown DINOv2 size {size!r}; one of {DINO_SIZES}")
    return Dinov2Config(mlp_ratio=4, layerscale_value=1.0, hidden_act="gelu", layer_norm_eps=1e-6, **kw)


def _image_processor(kind: str, size: str):
    import transformers

    def cls(name: str):
        # transformers 5 names the pure-PIL processors *Pil; the plain name may need torchvision.
        return getattr(transformers, name + "Pil", None) or getattr(transformers, name)

    if kind == "clip":
        edge = 32 if size == "tiny" else 224
        return cls("CLIPImageProcessor")(
            size={"shortest_edge": edge}, crop_size={"height": edge, "width": edge}, resample=3,
            image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, do_center_crop=True)
    edge, crop = (32, 28) if size == "tiny" else (256, 224)
    return cls("BitImageProcessor")(
        size={"shortest_edge": edge}, crop_size={"height": crop, "width": crop}, resample=3,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_center_crop=True, do_convert_rgb=True)


def make_clip(dest: Union[str, os.PathLike], size: str = "tiny", seed: int = 0, dtype: Optional[str] = None,
              device: Optional[str] = None) -> str:
    """Build a random-weight ``CLIPModel`` plus tokenizer and image processor; save them in ``dest``."""
    import torch
    from transformers import CLIPModel

    dest = str(dest)
    tok = _tokenizer()
    # Real size keeps the real embedding table (49 408 rows); the byte tokenizer only uses its first ids.
    vocab = 49408 if size == "vit-l-14" else len(tok)
    cfg = clip_config(size, vocab_size=vocab, bos=tok.bos_token_id, eos=tok.eos_token_id)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = CLIPModel(cfg).eval()
    if dtype:
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    _image_processor("clip", size).save_pretrained(dest)
    mark_random(dest)
    return dest


def make_dino(dest: Union[str, os.PathLike], size: str = "tiny", seed: int = 1, dtype: Optional[str] = None,
              device: Optional[str] = None) -> str:
    """Build a random-weight ``Dinov2Model`` plus image processor; save them in ``dest``."""
    import torch
    from transformers import Dinov2Model

    dest = str(dest)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = Dinov2Model(dino_config(size)).eval()
    if dtype:
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(dest)
    _image_processor("dino", size).save_pretrained(dest)
    mark_random(dest)
    return dest


def make_encoders(root: Union[str, os.PathLike], clip_size: str = "tiny", dino_size: str = "tiny",
                  dtype: Optional[str] = None, device: Optional[str] = None) -> dict[str, str]:
    """Write ``root/clip`` and ``root/dino`` (skipping a folder that already holds a model).

    Returns ``{"clip": path, "dino": path}``, ready for ``models.clip`` / ``models.dino`` in storygraph.toml.
    """
    root = Path(root)
    out = {}
    for key, make, size in (("clip", make_clip, clip_size), ("dino", make_dino, dino_size)):
        folder = root / key
        if not (folder / "config.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            make(folder, size=size, dtype=dtype, device=device)
        out[key] = str(folder)
    return out
