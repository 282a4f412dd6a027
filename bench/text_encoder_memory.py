"""GPU memory and time of one Gemma 3 12B prompt encoding (LTX-2's text encoder), resident and streamed.

    python bench/text_encoder_memory.py          # needs a GPU with ~30 GB free

Random bf16 weights at the published size, built on the GPU; a 1024-token left-padded prompt with
``output_hidden_states=True``, as ``LTX2ConditionPipeline`` encodes. Measures the forward's peak allocated memory
beyond the weights: the pipeline's own call (``encode_prompt`` runs with autograd on), then without autograd by
default, with ``use_cache=False``, with ``logits_to_keep=1``, and the decoder alone with ``use_cache=False`` (what
``LTX2Generator`` runs: ``storygraph.engine.generators.gpu_memory.text_decoder``). Then it streams the model with
``stream_module`` (diffusers' block-level group offloading on the decoder, the module that owns the layers) and
measures two streamed forwards: how much of the model is on the GPU at the peak and how long a prompt takes.
Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GIB = 2**30


def main() -> int:
    import torch
    import transformers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from real_configs import GEMMA3_12B
    from storygraph.engine.generators.gpu_memory import stream_module, text_decoder

    def snap(t0):
        torch.cuda.synchronize()
        return {"allocated_gib": round(torch.cuda.memory_allocated() / GIB, 2),
                "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2), "s": round(time.perf_counter() - t0, 2)}

    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "transformers": transformers.__version__}
    torch.set_default_dtype(torch.bfloat16)
    t = time.perf_counter()
    with torch.device("cuda"), torch.no_grad():
        model = Gemma3ForConditionalGeneration(Gemma3Config(**GEMMA3_12B)).eval()
    torch.set_default_dtype(torch.float32)
    out["built"] = snap(t)
    ids = torch.randint(4, 300, (1, 1024), device="cuda")
    mask = torch.ones(1, 1024, dtype=torch.long, device="cuda")
    mask[:, :900] = 0
    out["resident"] = {}
    decoder = text_decoder(model)
    for name, module, grad, kw in (
            ("pipeline's call (autograd on)", model, True, {}), ("default", model, False, {}),
            ("use_cache=False", model, False, {"use_cache": False}),
            ("use_cache=False, logits_to_keep=1", model, False, {"use_cache": False, "logits_to_keep": 1}),
            ("decoder alone, use_cache=False (LTX2Generator)", decoder, False, {"use_cache": False})):
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.set_grad_enabled(grad):
            res = module(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kw)
        out["resident"][name] = snap(t)
        del res
        torch.cuda.empty_cache()
    t = time.perf_counter()
    stream_module(model, "cuda")
    torch.cuda.empty_cache()
    out["stream_setup"] = snap(t)
    out["streamed"] = []
    for _ in range(2):
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.no_grad():
            decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        out["streamed"].append(snap(t))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
