"""Media written in the background while the next scene generates: memory works exactly as when each scene is
committed before the next starts, the next scene extends from its parent's frames handed over in memory, and each
scene's timing record accounts for the run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from support import harbor_story, new_engine

pytestmark = pytest.mark.slow


def _run(tmp_path, name, tiny_config, tiny_runtime, mode):
    engine = new_engine(tmp_path / name, tiny_config, tiny_runtime, harbor_story(), engine={"media_writer": mode})
    records = []
    engine.on_timings(records.append)
    t = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - t
    store = engine.store
    scenes = store.scenes()
    provenance = {s.id: sorted((c.role, c.target_kind, c.target_id, c.frame_index, round(c.strength, 6),
                                None if c.score is None else round(c.score, 6)) for c in store.conditioned_on(s.id))
                  for s in scenes}
    memory = sorted((a.id, round(a.strength, 6), a.reinforced_clock, a.accepted)
                    for a in store.appearances(accepted_only=False, with_vectors=False))
    status = {s.id: s.status for s in scenes}
    engine.close()
    return provenance, memory, status, records, elapsed


def test_background_writer_keeps_memory_exact(tmp_path, tiny_config, tiny_runtime):
    inline = _run(tmp_path, "inline", tiny_config, tiny_runtime, "inline")
    background = _run(tmp_path, "background", tiny_config, tiny_runtime, "background")
    prov_i, mem_i, status_i, _, _ = inline
    prov_b, mem_b, status_b, records, elapsed = background
    assert set(status_b.values()) == {"done"} and status_b == status_i
    # the cut to a character seen before leans on a retrieved appearance of the scene committed just before it
    keyframes = [t for p in prov_b.values() for t in p if t[0] == "keyframe"]
    assert keyframes, prov_b
    assert prov_b == prov_i  # same memories chosen, same scores, same strengths
    assert mem_b == mem_i  # same appearances, same reinforcement

    # one record per scene; the slots cover the run and nothing is counted twice
    assert [r["scene"] for r in records] == list(prov_b)
    slots = [r["wall_s"] for r in records]
    assert all(s is not None and s > 0 for s in slots)
    assert sum(slots) <= elapsed + 1e-3
    for r in records:
        st = r["stages"]
        assert st["generate_s"] <= r["wall_s"] and st["media_write_s"] > 0 and "media_wait_s" in st
        assert r["generator"]["total_s"] > 0


def test_next_scene_extends_from_frames_in_memory(tmp_path, tiny_config, tiny_runtime, monkeypatch):
    """A continuous child of the scene in flight gets its parent's last frames without reading them from disk, and
    they are the frames the parent's files hold."""
    from storygraph.engine import engine as engine_module
    from storygraph.engine import media

    engine = new_engine(tmp_path / "s", tiny_config, tiny_runtime, harbor_story(), engine={"media_writer": "background"})
    handed = {}
    original = engine_module.StoryEngine._condition

    def condition(self, work):
        original(self, work)
        if work.parent_frames is not None:
            handed[work.scene.id] = [np.array(f) for f in work.parent_frames]

    def no_disk(*a, **k):
        raise AssertionError("parent frames read from disk")

    monkeypatch.setattr(engine_module.StoryEngine, "_condition", condition)
    monkeypatch.setattr(media, "read_last_frames", no_disk)
    engine.run()
    store = engine.store
    child = "s02-package"  # continuous from s01-arrival
    parent = store.scene("s01-arrival")
    monkeypatch.undo()
    on_disk = media.read_last_frames(media.take_dir(engine.dir, parent.id, parent.chosen_take),
                                     tiny_config.engine.extension_frames)
    engine.close()
    assert len(handed[child]) == tiny_config.engine.extension_frames
    assert all(np.array_equal(a, b) for a, b in zip(handed[child], on_disk))
