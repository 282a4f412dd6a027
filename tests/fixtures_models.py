"""Shared fixtures: tiny CLIP and DINOv2 models built from configs, saved, and loaded back with from_pretrained.

Import the fixtures into a test module (``from fixtures_models import tiny_model_dirs, tiny_encoders``).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """``{"clip": folder, "dino": folder}`` holding tiny random-weight models saved with save_pretrained."""
    from storygraph.engine.tiny.encoders import make_encoders

    return make_encoders(tmp_path_factory.mktemp("tiny-encoders"))


@pytest.fixture(scope="session")
def tiny_encoders(tiny_model_dirs):
    """An ``Encoders`` on the CPU loaded from the tiny folders."""
    from storygraph.engine.encoders import Encoders

    return Encoders.load(tiny_model_dirs["clip"], tiny_model_dirs["dino"], device="cpu", batch_size=8)
