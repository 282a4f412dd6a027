"""Media written in the background while the next scene generates: memory works exactly as when each scene is
committed before the next starts, the next scene extends from its parent's frames handed over in memory, and each
scene's timing record accounts for the run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from support import harbor_story, new_engine
from storygraph.engine.runs import Selection

pytestmark = pytest.mark.slow


def _run(tmp_path, name, tiny_config, tiny_runtime, mode):
    engine = new_engine(tmp_path / name, tiny_config, tiny_runtime, harbor_story(), engine={"media_writer": mode})
    records = []
    engine.on_timings(records.append)
    t = time.perf_counter()
    if mode == "inline":  # each scene committed before the next starts: what the background writer must equal
        for scene in engine.run_plan(Selection("all")):
            engine.generate(scene.id, takes=engine.config.engine.takes)
    else:
        engine.run()
    elapsed = time.perf_counter() - t
    store = engine.store
    scenes = store.scenes()
    provenance = {s.id: sorted((c.role, c.target_kind, c.target_id, c.frame_index, round(c.strength, 6),
                                None if c.score is None else round(c.score, 6)) for c in store.conditioned_on(s.id))
                  for s in scenes}
    memory = sorted((a.id, round(a.strength, 6), a.reinforced_clock, a.accepted, tuple(sorted(a.uses)))
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
    memories = [t for p in prov_b.values() for t in p if t[0] == "memory" and t[1] == "Appearance"]
    assert memories, prov_b
    assert any(m[4] for m in mem_b), mem_b  # memories with uses: what later scenes' retrieval derives strength from
    assert prov_b == prov_i  # same memories chosen, same scores, same strengths
    assert mem_b == mem_i  # same appearances, same uses

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


CUTS = ("s01-arrival", "s02-package", "s04-meeting", "s05-beam", "s06-escape")


def _retrievals(tmp_path, name, tiny_config, tiny_runtime, mode, monkeypatch):
    """Every candidate memory every scene retrieved: (scene, character, memory, score, strength, uses by ancestors)."""
    from support import harbor_story as story_of
    from storygraph.engine import engine as engine_module

    seen = []
    original = engine_module.StoryEngine._retrieve

    def retrieve(self, work):
        original(self, work)
        for cid, cands in sorted(work.memories.items()):
            seen.extend((work.scene.id, cid, c.appearance.id, round(c.score, 9), round(c.strength, 9), c.uses)
                        for c in cands)

    monkeypatch.setattr(engine_module.StoryEngine, "_retrieve", retrieve)
    story = story_of(CUTS, tuple((a, b, "cut", None) for a, b in zip(CUTS, CUTS[1:])), story_id="cuts")
    engine = new_engine(tmp_path / name, tiny_config, tiny_runtime, story, engine={"media_writer": mode})
    if name == "one by one":  # each scene committed before the next starts: what the pipeline must equal
        for sid in CUTS:
            engine.generate(sid, takes=engine.config.engine.takes)
    else:
        engine.run()
    engine.close()
    monkeypatch.undo()
    return seen


def test_the_next_scene_retrieves_the_scene_in_flight_as_if_it_were_committed(tmp_path, tiny_config, tiny_runtime,
                                                                                monkeypatch):
    """On a run of cuts, each scene is retrieved for while the one before it waits for its files: its appearances
    and the uses it made of older memories count exactly as they do when every scene is committed before the next
    starts (one ``generate`` per scene). Without the scene in flight's appearances, or without its uses, this
    fails."""
    reference = _retrievals(tmp_path, "one by one", tiny_config, tiny_runtime, "inline", monkeypatch)
    background = _retrievals(tmp_path, "background", tiny_config, tiny_runtime, "background", monkeypatch)
    assert background == reference
    previous = dict(zip(CUTS[1:], CUTS))
    # what the pipeline has to get right is there: memories from the scene just before (in flight then) ...
    assert any(aid.startswith(previous[sid] + ":") for sid, _, aid, *_ in background if sid in previous)
    # ... and memories whose strength comes from their uses by earlier scenes (the one just before included)
    assert any(uses > 0 and sid in previous for sid, _, aid, _, _, uses in background)
