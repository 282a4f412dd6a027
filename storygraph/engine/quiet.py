"""Quiet runs: third-party loading bars, info logs and warnings kept out of a run's output.

``storygraph run``, ``resume`` and ``demo`` print their own progress (scene, stage, step, time left) and nothing
else; ``-v`` leaves the libraries' output as it is. Called before any model loads: it sets the libraries' own
switches (Hugging Face Hub, transformers and diffusers progress bars and verbosity) and filters the warnings
torch, transformers, diffusers and accelerate raise while loading and running.
"""

from __future__ import annotations

import logging
import os
import warnings

LIBRARIES = ("torch", "transformers", "diffusers", "accelerate", "huggingface_hub", "timm", "faiss")


def quiet_libraries() -> None:
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["DIFFUSERS_VERBOSITY"] = "error"
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    for name in LIBRARIES:
        warnings.filterwarnings("ignore", module=rf"{name}(\..*)?$")
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:  # pragma: no cover - both are dependencies
        return
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
