"""Exact k-NN on a GPU through the vector index's torch path, against the memory-bandwidth bound; prints one JSON object.

    python bench/knn_cuda.py [--rows 1000000,4000000] [--dim 1024] [--k 10] [--peak-gbs 3350] [--device cuda]

For each size, one character partition of ``rows`` L2-normalised ``dim``-d vectors (bf16 on the device):

- ``bound_ms``: bytes of the matrix / ``--peak-gbs`` (H100 SXM HBM3: 3 350 GB/s), the floor for one query;
- ``read_ms``: a plain read of the matrix on the device (``amax``), the bound as this GPU achieves it;
- ``matmul_topk_ms``: the kernels alone (``X @ q`` + ``topk``), CUDA-event timed;
- ``search_ms``/``search_p99_ms``: ``VectorIndex.search`` end to end (query upload, matmul, topk, copy back,
  float32 re-rank on the host), wall clock; ``search_timeline_ms`` the same restricted to a timeline
  (mask computed on the device; a tenth of the rows sit on a sibling branch);
- ``ratio``: search_ms / bound_ms (the target is 1.5 or less), ``ratio_kernels``: matmul_topk_ms / bound_ms.

Needs torch and numpy only (no faiss, no graph database). ``--device cpu`` runs the same code on the CPU, slowly,
to check it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storygraph.domain import Placement  # noqa: E402
from storygraph.engine.vectors import VectorIndex  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def event_time_ms(fn, reps: int, device: str) -> float:
    import torch

    if not device.startswith("cuda"):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
        return statistics.median(ts)
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def one_size(rows: int, dim: int, k: int, reps: int, peak_gbs: float, device: str, dtype_name: str) -> dict:
    import torch

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator(device=device).manual_seed(rows)
    host = np.empty((rows, dim), np.float32)
    step = 1 << 18
    for s in range(0, rows, step):  # generate on the device, keep the float32 master copy on the host
        x = torch.randn((min(step, rows - s), dim), generator=gen, device=device, dtype=torch.float32)
        host[s: s + len(x)] = torch.nn.functional.normalize(x, dim=1).cpu().numpy()
    side = np.zeros(rows, bool)
    side[rows - rows // 10:] = True
    branches = np.where(side, "side", "main").tolist()
    pos = np.where(side, np.arange(rows) - (rows - rows // 10), np.arange(rows))
    idx = VectorIndex("clip", backend="torch", device=device, torch_dtype=dtype_name)
    t = time.perf_counter()
    idx.add_arrays([f"r{i}" for i in range(rows)], ["c"] * rows, host, branches, pos, pos.astype(np.float64),
                   normalised=True)
    add_s = time.perf_counter() - t
    queries = host[np.random.default_rng(0).integers(0, rows, reps + 5)] + 0.01
    t = time.perf_counter()
    idx.search("c", queries[0], k)  # first search uploads the partition
    upload_s = time.perf_counter() - t
    mirror = idx._parts["c"].mirror
    X = mirror.vecs[:rows]
    q = torch.from_numpy(queries[1]).to(device, dtype)

    read_ms = event_time_ms(lambda: torch.amax(X), reps, device)
    kern_ms = event_time_ms(lambda: torch.topk(X @ q, k), reps, device)

    timeline = Placement("q", float(rows), "main", rows - rows // 10)
    lat, lat_tl = [], []
    for i in range(reps + 5):
        t = time.perf_counter()
        got, _ = idx.search("c", queries[i], k)
        lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        got_tl, _ = idx.search("c", queries[i], k, timeline)
        lat_tl.append((time.perf_counter() - t) * 1000)
        assert len(got) == k and all(int(g[1:]) < rows - rows // 10 for g in got_tl)
    lat, lat_tl = lat[5:], lat_tl[5:]
    # correctness against float32 on the host, for a few queries
    agree = []
    for i in range(3):
        got, _ = idx.search("c", queries[i], k)
        exact = np.argsort(-(host @ (queries[i] / np.linalg.norm(queries[i]))))[:k]
        agree.append(len({int(g[1:]) for g in got} & set(exact.tolist())) / k)

    nbytes = rows * dim * torch.finfo(dtype).bits // 8
    bound_ms = nbytes / (peak_gbs * 1e9) * 1000
    search_ms = statistics.median(lat)
    out = {
        "rows": rows, "dim": dim, "k": k, "dtype": dtype_name, "matrix_gb": round(nbytes / 1e9, 3),
        "bound_ms": round(bound_ms, 3), "read_ms": round(read_ms, 3), "matmul_topk_ms": round(kern_ms, 3),
        "search_ms": round(search_ms, 3), "search_p99_ms": round(pct(lat, 0.99), 3),
        "search_timeline_ms": round(statistics.median(lat_tl), 3),
        "ratio": round(search_ms / bound_ms, 3), "ratio_kernels": round(kern_ms / bound_ms, 3),
        "ratio_to_read": round(search_ms / read_ms, 3), "recall_vs_float32": round(float(np.mean(agree)), 3),
        "add_s": round(add_s, 2), "upload_s": round(upload_s, 2),
    }
    del idx, mirror, X, host
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,4000000")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--peak-gbs", type=float, default=3350.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu to check the code path")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    results = [one_size(int(r), args.dim, args.k, args.reps, args.peak_gbs, args.device, args.dtype)
               for r in args.rows.split(",")]
    print(json.dumps({"device": name, "torch": torch.__version__, "peak_gbs": args.peak_gbs, "results": results}))


if __name__ == "__main__":
    main()
