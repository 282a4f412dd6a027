"""Differential fuzzing of the console's first guard against the real LadybugDB engine (see readonly_fuzz.py).

10,000 generated queries a run: every one the guard accepts must be, per the engine, one statement that
changes nothing and touches no file, and every string literal it accepts must decode as the engine decodes it.
``bench/fuzz_readonly.py --n N`` runs the same check for as long as you like.
"""

from __future__ import annotations

import random

from storygraph.graphdb import readonly_fuzz


def test_guard_and_engine_agree_on_10000_generated_queries():
    report = readonly_fuzz.run(readonly_fuzz.generate(random.Random(20261201), 10_000))
    summary = report.as_dict()
    assert report.violations == [], summary
    # the run must exercise both sides: many refusals and a good share of accepted queries and literal probes
    assert summary["generated"] == 10_000
    assert summary["accepted"] >= 800 and summary["refused"] >= 5_000, summary
    assert summary["literal_probes"] >= 300, summary


def test_the_fuzzer_finds_a_guard_that_misreads_comments():
    """A guard that ends a block comment at the first ``*/`` (as the one before this module did) is caught."""
    import re

    from storygraph.graphdb.store import ReadOnlyViolation

    def naive(cypher: str) -> str:
        stripped = re.sub(r"/\*.*?\*/", " ", cypher, flags=re.S)
        stripped = re.sub(r"'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?", "''", stripped, flags=re.S)
        if re.search(r"\b(CREATE|MERGE|SET|DELETE|DETACH|COMMIT|CHECKPOINT|BEGIN)\b", stripped, re.I) or \
                ";" in stripped.rstrip().rstrip(";"):
            raise ReadOnlyViolation("refused")
        return cypher

    original = readonly_fuzz.check_read_only
    readonly_fuzz.check_read_only = naive
    try:
        report = readonly_fuzz.run(readonly_fuzz.generate(random.Random(1), 4_000))
    finally:
        readonly_fuzz.check_read_only = original
    assert report.violations, "the fuzzer should have found the comment bypass"
