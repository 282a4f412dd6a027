"""The GPU benchmarks run in their CPU form, as a user would start them: a benchmark whose imports or calls have
drifted from the code it measures fails here, not on the GPU machine where a run costs minutes of a lease."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, out: Path | None = None) -> dict:
    r = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600,
                       env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                            "HOME": str(Path.home())})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text() if out is not None else r.stdout)


def test_e2e_runs_the_story_through_storygraph_run_and_times_the_bare_pipeline(tmp_path):
    d = _run("e2e.py", "--out", str(tmp_path / "e2e.json"), out=tmp_path / "e2e.json")
    cap = d["caps"]["0"]
    assert cap["completed"] and len(cap["scenes"]) == 6
    stages = {"plan_s", "retrieve_s", "condition_s", "text_encode_s", "denoise_s", "vae_decode_s", "observe_s",
              "media_write_s", "media_wait_s", "commit_s"}
    for s in d["scenes"]:
        assert stages <= set(s["stages"]), s["scene"]
        # wall_s leaves model loading out (load_s, the first scene's)
        assert s["pipeline_s"] > 0 and s["ratio_to_pipeline"] == pytest.approx(s["wall_s"] / s["pipeline_s"], rel=0.01)
    assert 0 < d["gpu_busy"] <= 1 and d["peak_gib"] > 0


def test_generate_times_every_memory_mode_against_no_memory():
    d = _run("generate.py", "--tiny", "--mode", "all", "--runs", "1")
    assert list(d["modes"]) == ["extend", "context", "reference", "keyframe"]
    for mode, m in d["modes"].items():
        assert m["seconds_per_scene"] > 0, mode
    # context memory and keyframes add tokens to every step; an extension replaces frames of the clip
    base = d["tokens"]
    assert d["modes"]["context"]["tokens"]["appended"] > 0 and d["modes"]["keyframe"]["tokens"]["appended"] > 0
    assert d["modes"]["extend"]["tokens"]["appended"] == 0 and base["appended"] == 0
