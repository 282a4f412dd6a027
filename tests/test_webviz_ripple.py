"""Edits that ripple, through the studio's HTTP API over a real embedded store and engine: re-parenting replaces the
incoming transition, scenes and transitions can be deleted (never stranding generated scenes unless asked to), stale
scenes carry their reason in the graph the page draws, and "regenerate downstream" queues them parents first.

The example story is committed by hand, each take recording what it was made from:
s02 extends s01, s04 remembers Mara from s02, s05 extends s04, s06 remembers Mara from s05.
"""

from __future__ import annotations

import time

import pytest

from storygraph.domain import ConditionRecord
from storygraph.webviz import create_app, viewer_of

from support import EXAMPLE, commit_take

MADE_FROM = {"s01-arrival": [], "s02-package": [("extension", "Scene", "s01-arrival")], "s03-keeper": [],
             "s04-meeting": [("keyframe", "Appearance", "s02-package#t0#mara")],
             "s05-beam": [("extension", "Scene", "s04-meeting")],
             "s06-escape": [("keyframe", "Appearance", "s05-beam#t0#mara")]}


@pytest.fixture
def studio(tmp_path):
    from storygraph.engine.engine import StoryEngine

    engine = StoryEngine.open(tmp_path / "studio")
    engine.load(EXAMPLE)
    for sid, made_from in MADE_FROM.items():
        commit_take(engine.store, sid, conditioned_on=[ConditionRecord(role, kind, target, 0, 1.0, None, "why")
                                                       for role, kind, target in made_from])
    app = create_app(engine.store, engine, story_dir=engine.dir, warm=False, poll_s=0.02)
    app.testing = True
    yield engine, app
    viewer_of(app).close()
    viewer_of(app).worker.close(wait=10)
    engine.close()


def call(app, method, url, body=None, token=True):
    headers = {"X-Storygraph-Token": app.config["STORYGRAPH_TOKEN"]} if token else {}
    return app.test_client().open(url, method=method, json=body if body is not None else {}, headers=headers)


def stale(engine) -> dict:
    return {s.id: s.stale_reason for s in engine.store.scenes() if s.status == "stale"}


def test_re_parenting_replaces_the_incoming_transition_and_marks_the_moved_subtree(studio):
    engine, app = studio
    r = call(app, "POST", "/api/transitions", {"from": "s03-keeper", "to": "s05-beam", "kind": "cut"})
    assert r.status_code == 201, r.get_json()
    assert [t.from_id for t in engine.store.transitions() if t.to_id == "s05-beam"] == ["s03-keeper"]
    assert engine.store.scene("s05-beam").placement.parent_id == "s03-keeper"
    assert stale(engine) == {"s05-beam": "moved: now follows s03-keeper",
                             "s06-escape": "upstream s05-beam: moved: now follows s03-keeper"}
    assert engine.store.scene("s04-meeting").status == "done"  # left behind, not moved
    # later edits of transitions work (the old edge is gone, not doubled)
    r = call(app, "POST", "/api/transitions", {"from": "s05-beam", "to": "s06-escape", "kind": "time_skip", "gap": 5})
    assert r.status_code == 201, r.get_json()
    assert [(t.from_id, t.kind, t.gap) for t in engine.store.transitions() if t.to_id == "s06-escape"] == [
        ("s05-beam", "time_skip", 5.0)]
    # the page's graph marks them: reason in the node's data, the status as a class
    g = app.test_client().get("/api/graph").get_json()
    nodes = {n["data"]["id"]: n for n in g["nodes"]}
    assert nodes["s05-beam"]["data"]["stale_reason"] == "moved: now follows s03-keeper"
    assert "status-stale" in nodes["s05-beam"]["classes"].split()
    assert "stale_reason" not in nodes["s04-meeting"]["data"]
    assert [e["data"]["source"] for e in g["edges"] if e["data"].get("target") == "s05-beam" and
            e["data"]["type"] == "next"] == ["s03-keeper"]
    panel = app.test_client().get("/api/scenes/s06-escape").get_json()
    assert (panel["status"], panel["stale_from"]) == ("stale", "s05-beam")


def test_a_scene_with_generated_scenes_after_it_is_deleted_only_with_cascade(studio):
    engine, app = studio
    assert call(app, "DELETE", "/api/scenes/s04-meeting", token=False).status_code == 401
    r = call(app, "DELETE", "/api/scenes/s04-meeting")
    assert r.status_code == 409 and "s05-beam" in r.get_json()["error"] and "cascade" in r.get_json()["error"]
    assert engine.store.scene("s04-meeting") is not None
    assert call(app, "DELETE", "/api/scenes/s04-meeting", {"cascade": "yes"}).status_code == 400
    r = call(app, "DELETE", "/api/scenes/s04-meeting", {"cascade": True})
    assert r.status_code == 200, r.get_json()
    after = ["s04-meeting", "s05-beam", "s06-escape", "s07-dawn", "s08-return", "s09-market", "s08-overboard",
             "s09-epilogue"]
    assert sorted(r.get_json()["deleted"]) == sorted(after)
    assert [s.id for s in engine.store.scenes()] == ["s01-arrival", "s02-package", "s03-keeper"]
    assert not (engine.dir / "media" / "s04-meeting").exists()
    assert stale(engine) == {}
    assert call(app, "DELETE", "/api/scenes/s04-meeting").status_code == 404


def test_a_delete_with_a_field_it_does_not_take_is_refused_and_deletes_nothing(studio):
    engine, app = studio
    r = call(app, "DELETE", "/api/scenes/s04-meeting", {"cascade": True, "everything": True})
    assert r.status_code == 400 and "everything" in r.get_json()["error"]
    assert engine.store.scene("s04-meeting") is not None and engine.store.scene("s05-beam") is not None


def test_deleting_a_transition_detaches_what_follows_it(studio):
    engine, app = studio
    r = call(app, "DELETE", "/api/transitions/s02-package/s03-keeper")
    assert r.status_code == 200, r.get_json()
    s03 = engine.store.scene("s03-keeper")
    assert s03.placement.parent_id is None and s03.clock == 0.0
    why = "moved: detached from s02-package"
    assert stale(engine) == {"s03-keeper": why, "s04-meeting": f"upstream s03-keeper: {why}",
                             "s05-beam": f"upstream s03-keeper: {why}", "s06-escape": f"upstream s03-keeper: {why}"}
    assert call(app, "DELETE", "/api/transitions/s02-package/s03-keeper").status_code == 404


def test_regenerate_downstream_queues_the_stale_scenes_parents_first(studio):
    engine, app = studio
    r = call(app, "PATCH", "/api/scenes/s02-package", {"lighting": "a green flare"})
    assert r.status_code == 200, r.get_json()
    assert stale(engine) == {"s02-package": "edited: lighting", "s04-meeting": "upstream s02-package: edited: lighting",
                             "s05-beam": "upstream s02-package: edited: lighting (made from s04-meeting)",
                             "s06-escape": "upstream s02-package: edited: lighting (made from s05-beam)"}
    panel = app.test_client().get("/api/scenes/s04-meeting").get_json()
    assert (panel["stale_reason"], panel["stale_from"]) == ("upstream s02-package: edited: lighting", "s02-package")
    r = call(app, "POST", "/api/scenes/s02-package/regenerate-downstream")
    assert r.status_code == 202, r.get_json()
    assert [j["scene_id"] for j in r.get_json()["jobs"]] == ["s02-package", "s04-meeting", "s05-beam", "s06-escape"]
    jobs = {j["id"] for j in r.get_json()["jobs"]}
    deadline = time.monotonic() + 60  # this studio has no media to extend from: the jobs end, refused
    while time.monotonic() < deadline:
        states = {j["id"]: j["state"] for j in app.test_client().get("/api/jobs").get_json()["jobs"] if j["id"] in jobs}
        if all(st in ("done", "failed") for st in states.values()):
            break
        time.sleep(0.05)
    assert set(states.values()) == {"failed"}
    assert engine.stale_scenes(after="s05-beam") == ["s05-beam", "s06-escape"]
    assert engine.stale_scenes() == ["s02-package", "s04-meeting", "s05-beam", "s06-escape"]
    r = call(app, "POST", "/api/scenes/s01-arrival/regenerate-downstream")
    assert r.status_code == 202 and len(r.get_json()["jobs"]) == 4
