"""GPU memory for the LTX-2 pipeline: a cap, where each part lives under it, what to give up next, and the
prompt encodings kept for reuse.

At its published size LTX-2 is ~40 GiB of transformer, text connectors and VAEs plus ~23 GiB of Gemma 3 12B text
encoder, and a 768x512x121 scene needs ~6 GiB more while it denoises and decodes. Three placements cover the
cards people have, and :func:`plan_placement` picks the first that fits:

* everything resident (80 GB cards);
* the text encoder *streamed*: its weights wait in pinned CPU memory and each block is copied to the GPU on a side
  stream just before it runs (diffusers' group offloading), so a new prompt costs one pass of its weights over
  PCIe and nothing stays on the GPU while the transformer denoises (48 GB cards);
* the transformer streamed as well (24 GB cards): every denoising step reads its weights over PCIe.

A cap (``[models] memory_cap_gib``) is applied with ``torch.cuda.set_per_process_memory_fraction``, so a large card
behaves as a smaller one would and a story can share a GPU. When a scene still runs out of memory the generator
steps down the ladder (:func:`next_rung`): VAE tiling, then the text encoder streamed, then the transformer
streamed, then lower sizes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

GIB = 2**30
#: activations and decode buffers of a 768x512x121 LTX-2 scene beyond its weights (46.0 GiB peak measured with
#: ~40.4 GiB of transformer, connectors and VAEs on an H200; bench/generate.py), scaled by pixels x frames
REFERENCE_RESERVE = 6 * GIB
REFERENCE_VOXELS = 768 * 512 * 121
MIN_RESERVE = 2 * GIB

PLACEMENTS = ("gpu", "stream")
TEXT_ENCODER_MODES = ("auto", "gpu", "stream")


@dataclass(frozen=True)
class Placement:
    """Where the two large parts live: ``"gpu"`` (resident) or ``"stream"`` (pinned CPU memory, copied in per
    block as it runs). Everything else of the pipeline is resident."""

    text_encoder: str = "gpu"
    transformer: str = "gpu"

    def describe(self) -> str:
        return f"text encoder {self.text_encoder}, transformer {self.transformer}"


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (0 for None)."""
    if module is None:
        return 0
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def activation_reserve(width: int, height: int, frames: int) -> int:
    """Bytes a scene of this size needs beyond the weights (an estimate; the ladder covers a wrong one)."""
    scale = (int(width) * int(height) * int(frames)) / REFERENCE_VOXELS
    return max(MIN_RESERVE, int(REFERENCE_RESERVE * scale))


def plan_placement(sizes: dict, budget: int, reserve: int, text_encoder: str = "auto") -> Placement:
    """The first placement whose resident weights plus ``reserve`` fit in ``budget`` bytes.

    ``sizes``: bytes per pipeline part (``text_encoder``, ``transformer`` and the rest under any names).
    ``text_encoder``: ``auto``, or ``gpu`` / ``stream`` to force it. When nothing fits, both large parts stream.
    """
    if text_encoder not in TEXT_ENCODER_MODES:
        raise ValueError(f"text_encoder must be one of {TEXT_ENCODER_MODES}, got {text_encoder!r}")
    te = int(sizes.get("text_encoder", 0))
    tr = int(sizes.get("transformer", 0))
    rest = sum(int(v) for k, v in sizes.items() if k not in ("text_encoder", "transformer"))
    te_options = ("gpu", "stream") if text_encoder == "auto" else (text_encoder,)
    for tr_place in ("gpu", "stream"):
        for te_place in te_options:
            resident = rest + (te if te_place == "gpu" else 0) + (tr if tr_place == "gpu" else 0)
            if resident + reserve <= budget:
                return Placement(te_place, tr_place)
    return Placement(te_options[-1], "stream")


def next_rung(placement: Placement, vae_tiling: bool) -> Optional[tuple[str, Placement, bool]]:
    """The ladder's next step after an out-of-memory error: ``(description, placement, vae_tiling)``, or None
    when only a lower size is left. VAE tiling first (cheap), then the text encoder streamed, then the
    transformer streamed."""
    if not vae_tiling:
        return "VAE tiling", placement, True
    if placement.text_encoder == "gpu":
        return "text encoder streamed from the CPU", Placement("stream", placement.transformer), True
    if placement.transformer == "gpu":
        return "transformer streamed from the CPU", Placement(placement.text_encoder, "stream"), True
    return None


def set_memory_cap(device, cap_gib: float) -> Optional[int]:
    """Limit this process's CUDA allocations on ``device`` to ``cap_gib`` GiB; returns the limit in bytes (None
    on the CPU or without a cap). Applies to allocations made from now on."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not cap_gib or cap_gib <= 0:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, float(cap_gib) * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return int(fraction * total)


def memory_budget(device, cap_bytes: Optional[int]) -> int:
    """Bytes this process may still allocate on ``device``: under the cap, and no more than the card has free."""
    import torch

    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    reserved = torch.cuda.memory_reserved(index)
    allocated = torch.cuda.memory_allocated(index)
    limit = min(cap_bytes, total) if cap_bytes else total
    # cached blocks (reserved but not allocated) are this process's to reuse
    return max(0, min(limit - allocated, free + reserved - allocated))


#: Text encoders whose decoder alone gives the hidden states the whole model does (Gemma 3: LTX-2.0 and 2.3).
#: LTX-2.5's Gemma 4 computes inputs for its layers outside them: its decoder alone gives other hidden states.
DECODER_ONLY_TYPES = ("gemma3", "gemma3_text")


def text_decoder(text_encoder):
    """The module of a text encoder that owns its decoder layers, or None: Gemma 3's
    ``model.language_model`` (``Gemma3ForConditionalGeneration``), ``model`` (``Gemma3ForCausalLM``), or the
    encoder itself when the layers are its own. Prompt encoding runs this module alone: it needs the hidden
    states, not the LM head's logits, the vision tower or a KV cache. None for an encoder not in
    :data:`DECODER_ONLY_TYPES` (it runs whole)."""
    import torch

    if text_encoder is None:
        return None
    if getattr(getattr(text_encoder, "config", None), "model_type", None) not in DECODER_ONLY_TYPES:
        return None
    for path in ("model.language_model", "language_model", "model", ""):
        m = text_encoder
        for part in filter(None, path.split(".")):
            m = getattr(m, part, None)
        if m is not None and isinstance(getattr(m, "layers", None), torch.nn.ModuleList):
            return m
    return None


def stream_module(module, device) -> None:
    """Keep ``module``'s weights in pinned CPU memory and copy each block in on a side stream as it runs
    (diffusers' block-level group offloading; works for diffusers and transformers models alike).

    Block-level offloading groups the layers that are children of the module it is applied to and loads
    everything else of that module as one group: applied to Gemma 3's top model, whose layers sit at
    ``model.language_model.layers``, that one group is the whole model. For a text encoder it is applied to
    :func:`text_decoder`, the module that owns the layers; the parts prompt encoding never runs (vision tower,
    projector) go to the CPU. The pinned copies are made from wherever the weights are (a GPU-resident part's
    memory is freed once they exist), so a part is never held twice in CPU memory."""
    import torch

    if getattr(module, "_storygraph_streamed", False):
        return
    kw = dict(onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
              num_blocks_per_group=1, use_stream=True)
    if hasattr(module, "enable_group_offload"):  # diffusers ModelMixin: its blocks are its own children
        module.enable_group_offload(**kw)
    else:
        from diffusers.hooks import apply_group_offloading

        decoder = text_decoder(module) or module
        if decoder is not module:
            inside = {id(t) for t in list(decoder.parameters()) + list(decoder.buffers())}
            with torch.no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    if id(t) not in inside and t.device.type != "cpu":
                        t.data = t.data.to("cpu")
        apply_group_offloading(decoder, **kw)
    module._storygraph_streamed = True


class PromptCache:
    """Prompt encodings (the text encoder's hidden states and masks), most recent ``size`` kept, keyed by
    everything that changes them: prompt, negative prompt, guidance on/off and sequence length. A retry, another
    take or a repeated prompt skips the text encoder."""

    def __init__(self, size: int = 2):
        self.size = max(0, int(size))
        self._items: "OrderedDict[tuple, tuple]" = OrderedDict()
        self.hits = 0

    @staticmethod
    def key(prompt: str, negative: str, cfg: bool, max_len: int) -> tuple:
        return (prompt, negative if cfg else None, bool(cfg), int(max_len))

    def get(self, key: tuple):
        got = self._items.get(key)
        if got is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return got

    def put(self, key: tuple, value: tuple) -> None:
        if self.size == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
