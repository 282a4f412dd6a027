"""The import structure holds: the contracts in pyproject.toml ([tool.importlinter]) are checked by lint-imports
(import-linter, a dev dependency) here, so the README's test command enforces them.

Layers: cli over webviz over engine over graphdb, storyfile and config (siblings) over timeline over domain and
faults over errors; the engine never imports Flask, the viewer never imports torch, diffusers, transformers or
faiss; no two modules of one package import each other, directly or round about.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                              os.environ.get("PATH", "")]))
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (it brings import-linter)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "0 broken" in r.stdout
