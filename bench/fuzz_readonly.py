"""Long runs of the console guard's differential fuzzer; prints one JSON object.

    python bench/fuzz_readonly.py --n 1000000 [--seed S] [--batch 20000]
    python bench/fuzz_readonly.py --depth      # the engine's time on the deepest shapes the guard accepts

Every query the guard accepts is run by LadybugDB on a writable in-memory story graph in a process that may
touch no file; a violation is a query the engine sees as several statements, that touches a file, changes the
graph, or whose string literal the engine decodes differently (storygraph/graphdb/readonly_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import random
import time


def fuzz(n: int, seed: int, batch: int) -> dict:
    from storygraph.graphdb import readonly_fuzz

    rng = random.Random(seed)
    totals = {"generated": 0, "accepted": 0, "literal_probes": 0, "violations": 0, "examples": []}
    t0 = time.perf_counter()
    while totals["generated"] < n:
        report = readonly_fuzz.run(readonly_fuzz.generate(rng, min(batch, n - totals["generated"])))
        d = report.as_dict()
        for k in ("generated", "accepted", "literal_probes", "violations"):
            totals[k] += d[k]
        totals["examples"] += d["examples"][: max(0, 5 - len(totals["examples"]))]
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    totals["seed"] = seed
    return totals


def depth() -> dict:
    import tempfile
    from pathlib import Path

    from storygraph.graphdb.console import ConsoleLimits
    from storygraph.graphdb.embedded import EmbeddedStore
    from storygraph.graphdb.readonly import check_read_only
    from storygraph.graphdb.store import ReadOnlyViolation, StoreError

    shapes = {
        "lists": lambda d: "RETURN " + "[" * d + "1" + "]" * d,
        "parentheses": lambda d: "RETURN " + "(" * d + "1" + ")" * d,
        "maps": lambda d: "RETURN " + "{a: " * d + "1" + "}" * d,
        "functions": lambda d: "RETURN " + "abs(" * d + "1" + ")" * d,
        "case": lambda d: "RETURN " + "CASE WHEN true THEN " * d + "1" + " END" * d,
        "exists": lambda d: "MATCH (s:Scene) WHERE " + "EXISTS { MATCH (s) WHERE " * d + "true" + " }" * d + " RETURN 1",
        "sum": lambda d: "RETURN " + "+".join(["1"] * d),
        "and": lambda d: "RETURN " + " AND ".join(["true"] * d),
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "story")
        for name, make in shapes.items():
            d = 1
            while d < 10_000:
                try:
                    check_read_only(make(d + 1))
                except ReadOnlyViolation:
                    break
                d += 1
            t0 = time.perf_counter()
            try:
                store._user_query(make(d), {}, ConsoleLimits(30.0, 10))
                status = "answered"
            except StoreError as e:
                status = str(e)[:80]
            out[name] = {"deepest_accepted": d, "engine_s": round(time.perf_counter() - t0, 3), "status": status}
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--depth", action="store_true")
    args = ap.parse_args()
    if args.depth:
        print(json.dumps(depth(), indent=1))
        return
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(json.dumps(fuzz(args.n, seed, args.batch), ensure_ascii=False))


if __name__ == "__main__":
    main()
