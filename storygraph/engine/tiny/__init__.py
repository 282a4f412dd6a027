"""Models built from configs with random weights (tests, the demo, benchmarks), and how to recognise them.

Every folder the builders here write carries :data:`RANDOM_WEIGHTS_MARKER`, so a report made with them (``storygraph
compare``, the demo) can say that its numbers show plumbing, never quality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

RANDOM_WEIGHTS_MARKER = "storygraph-random-weights.txt"


def mark_random(folder: Union[str, os.PathLike]) -> None:
    """Leave the marker in a folder of random-weight models."""
    Path(folder, RANDOM_WEIGHTS_MARKER).write_text(
        "These weights are random (built by storygraph from a config): pictures and scores made with them mean "
        "nothing about quality.\n", encoding="utf-8")


def has_random_weights(folder: Union[str, os.PathLike]) -> bool:
    """Whether ``folder`` (a model folder, or a file in one) holds weights built here at random."""
    p = Path(folder)
    return (p if p.is_dir() else p.parent).joinpath(RANDOM_WEIGHTS_MARKER).is_file()
