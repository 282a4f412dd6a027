"""``storygraph export`` (the LTX-2 trainer's dataset.json, scores and embeddings beside it) and
``storygraph report`` on a story generated with tiny random-weight models, two takes per scene and a branch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import harbor_story, new_engine, storygraph_cli

SCENES = ("s01-arrival", "s02-package", "s03-keeper", "s04-meeting")
TRANSITIONS = (
    ("s01-arrival", "s02-package", "continuous", None),
    ("s02-package", "s04-meeting", "cut", None),
    ("s01-arrival", "s03-keeper", "cut", None),  # a second child of s01: a branch
)


@pytest.fixture(scope="module")
def story(tmp_path_factory, tiny_config, tiny_runtime):
    """A generated story folder and what its graph says: scenes, chosen takes, accepted appearances."""
    d = tmp_path_factory.mktemp("export") / "story"
    engine = new_engine(d, tiny_config, tiny_runtime, harbor_story(SCENES, TRANSITIONS))
    try:
        engine.run(takes=2)
        scenes = {s.id: s for s in engine.store.scenes()}
        takes = {sid: engine.store.takes(sid) for sid in scenes}
        apps = engine.store.appearances(with_vectors=True)  # accepted only
    finally:
        engine.close()
    assert all(s.status == "done" for s in scenes.values())
    return {"dir": d, "scenes": scenes, "takes": takes, "apps": apps}


def _export(story, out: Path, *extra):
    r = storygraph_cli("export", story["dir"], "--format", "ltx-trainer", "--out", out, *extra, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    dataset = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    scores = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    return dataset, scores


def _chosen(story, sid):
    [t] = [t for t in story["takes"][sid] if t.chosen]
    return t


def test_one_entry_per_accepted_take_with_existing_media_and_the_prompt_as_caption(story, tmp_path):
    out = tmp_path / "ds"
    dataset, scores = _export(story, out)
    done = [s for s in story["scenes"].values() if s.status == "done"]
    accepted_takes = [t for ts in story["takes"].values() for t in ts if t.chosen]
    assert len(accepted_takes) == len(done) == len(SCENES)
    assert len(dataset) == len(accepted_takes)
    assert set(dataset[0]) == {"caption", "media_path"}

    by_media = {e["media_path"]: e["scene"] for e in scores["entries"]}
    assert sorted(by_media.values()) == sorted(SCENES)
    assert scores["skipped"] == []
    for entry in dataset:
        media = out / entry["media_path"]
        assert not Path(entry["media_path"]).is_absolute()
        assert media.is_file(), entry
        sid = by_media[entry["media_path"]]
        scene = story["scenes"][sid]
        assert entry["caption"] == scene.prompt
        assert entry["caption"] == _chosen(story, sid).prompt
        # the accepted take's video, not the other take's
        assert media.read_bytes() == (story["dir"] / _chosen(story, sid).video_path).read_bytes()
        others = [t for t in story["takes"][sid] if not t.chosen]
        assert others and all(media.read_bytes() != (story["dir"] / t.video_path).read_bytes() for t in others)


def test_min_identity_above_every_score_exports_nothing(story, tmp_path):
    top = max(s.scores.identity for s in story["scenes"].values())
    dataset, scores = _export(story, tmp_path / "ds", "--min-identity", f"{top + 0.01:.6f}")
    assert dataset == []
    assert scores["entries"] == []
    assert sorted(x["scene"] for x in scores["skipped"]) == sorted(SCENES)
    assert all("identity" in x["why"] for x in scores["skipped"])


def test_min_identity_between_scores_keeps_the_scenes_above(story, tmp_path):
    values = sorted(s.scores.identity for s in story["scenes"].values())
    limit = (values[0] + values[-1]) / 2
    if values[0] == values[-1]:
        pytest.skip("every scene has the same identity score")
    dataset, scores = _export(story, tmp_path / "ds", "--min-identity", repr(limit))
    keep = sorted(s.id for s in story["scenes"].values() if s.scores.identity >= limit)
    assert sorted(e["scene"] for e in scores["entries"]) == keep
    assert len(dataset) == len(keep)


def test_ic_lora_reference_is_the_parents_video(story, tmp_path):
    out = tmp_path / "ds"
    dataset, scores = _export(story, out, "--ic-lora")
    with_parent = [s for s in story["scenes"].values() if s.placement.parent_id]
    assert len(dataset) == len(with_parent)
    by_media = {e["media_path"]: e["scene"] for e in scores["entries"]}
    for entry in dataset:
        sid = by_media[entry["media_path"]]
        parent = story["scenes"][sid].placement.parent_id
        assert parent
        ref = out / entry["reference_path"]
        assert ref.is_file()
        assert ref.read_bytes() == (story["dir"] / _chosen(story, parent).video_path).read_bytes()
        assert entry["reference_path"] != entry["media_path"]
    roots = {s.id for s in story["scenes"].values() if not s.placement.parent_id}
    assert {x["scene"] for x in scores["skipped"]} == roots


def test_embeddings_hold_one_row_per_accepted_appearance(story, tmp_path):
    import numpy as np

    out = tmp_path / "ds"
    _export(story, out)
    apps = {a.id: a for a in story["apps"]}
    assert apps
    clip_dim, dino_dim = len(next(iter(apps.values())).clip), len(next(iter(apps.values())).dino)
    with np.load(out / "embeddings.npz") as z:
        ids, clip, dino = z["ids"].tolist(), z["clip"], z["dino"]
    assert sorted(ids) == sorted(apps)
    assert clip.shape == (len(apps), clip_dim)
    assert dino.shape == (len(apps), dino_dim)
    for i, aid in enumerate(ids):
        np.testing.assert_allclose(clip[i], apps[aid].clip, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dino[i], apps[aid].dino, rtol=1e-5, atol=1e-6)


def test_report_writes_html_and_png(story, tmp_path):
    out = tmp_path / "report"
    r = storygraph_cli("report", story["dir"], "--out", out, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    for sid in SCENES:
        assert sid in html
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 1000


def test_the_report_plots_each_branch_apart(tmp_path):
    """The example story forks after s07-dawn; mara is in s08-return (main) and s08-overboard (the branch). Her
    line on the branch starts at her last point before the fork and holds the branch's own points, never the
    main timeline's after the fork (one zigzag line through both would)."""
    from support import commit_take, example_store
    from storygraph.engine.report import identity_series, write_report

    store, story = example_store(tmp_path / "story")
    try:
        for i, s in enumerate(story.scenes):
            commit_take(store, s.id, identity=0.5 + 0.04 * i)
        series = identity_series(store)
        scenes = {s.id: s for s in store.scenes()}
        apps = store.appearances(with_vectors=False)
        report = write_report(store, tmp_path / "report")
    finally:
        store.close()
    assert report["series"] == series
    points = {}
    for a in apps:
        points.setdefault((a.character_id, a.scene_id), []).append((a.clock, a.identity_score))
    main, fork = scenes["s01-arrival"].placement.branch, scenes["s08-overboard"].placement.branch
    assert main != fork
    for cid, lines in series.items():
        for b, pts in lines.items():
            own = sorted(p for sid, s in scenes.items() if s.placement.branch == b for p in points.get((cid, sid), []))
            if b == main:
                assert sorted(pts) == own, (cid, b)
                continue
            # before the fork: the character's latest point on the scenes the branch follows
            before = [p for sid, s in scenes.items() if s.placement.branch == main and s.clock <= scenes["s07-dawn"].clock
                      for p in points.get((cid, sid), [])]
            assert sorted(pts) == sorted(own + ([max(before)] if before else [])), (cid, b)
    mara = series["mara"]
    assert set(mara) == {main, fork}
    after_fork_on_main = {p for sid in ("s08-return", "s09-market") for p in points.get(("mara", sid), [])}
    assert after_fork_on_main and not after_fork_on_main & set(mara[fork])
