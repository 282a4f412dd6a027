"""The studio's JSON routes through Flask's test client over a real embedded store and engine: the queue (runs,
cancel, history), reference images, deleting, timelines and cuts, console results as a graph, and the guards in
front of every one of them.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from support import commit_take, example_store, harbor_story, new_engine
from storygraph.webviz import create_app, viewer_of

TOKEN = "X-Storygraph-Token"


def make_app(store, engine=None, **options):
    options.setdefault("keepalive_s", 0.3)
    options.setdefault("poll_s", 0.02)
    app = create_app(store, engine, story_dir=store.path if engine is None else engine.dir, warm=False, **options)
    app.testing = True
    viewer_of(app).start()
    return app


def call(app, method, url, body=None, token=True):
    headers = {TOKEN: app.config["STORYGRAPH_TOKEN"]} if token else {}
    return app.test_client().open(url, method=method, json=body if body is not None else {}, headers=headers)


def png(color=(30, 90, 200), size=(40, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def follower(tmp_path):
    store, story = example_store(tmp_path / "story")
    app = make_app(store)
    yield store, story, app
    viewer_of(app).close()
    store.close()


@pytest.fixture
def studio(tmp_path, tiny_config, tiny_runtime):
    eng = new_engine(tmp_path / "studio", tiny_config, tiny_runtime, harbor_story())
    app = make_app(eng.store, eng)
    yield eng, app
    viewer_of(app).close()
    viewer_of(app).worker.close(wait=60)
    eng.close()


def wait_state(app, job_id, states, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = app.test_client().get(f"/api/jobs/{job_id}").get_json()
        if j["state"] in states:
            return j
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {j}")


# -- guards -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,url,body", [
    ("POST", "/api/runs", {"kind": "all"}), ("POST", "/api/jobs/1/cancel", {}),
    ("POST", "/api/references", {"to": "character", "id": "mara", "image": png()}),
    ("DELETE", "/api/references", {"to": "character", "id": "mara"}), ("DELETE", "/api/scenes/s01-arrival", {}),
    ("DELETE", "/api/transitions/s01-arrival/s02-package", {}), ("POST", "/api/cut", {})])
def test_every_studio_write_needs_the_token_and_the_same_origin(follower, method, url, body):
    store, _, app = follower
    before = store.last_event_seq()
    assert call(app, method, url, body, token=False).status_code == 401
    r = app.test_client().open(url, method=method, json=body, headers={
        TOKEN: app.config["STORYGRAPH_TOKEN"], "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert store.last_event_seq() == before and store.scene("s01-arrival") is not None


def test_a_follower_refuses_runs_references_and_deleting(follower):
    store, _, app = follower
    for method, url, body in (("POST", "/api/runs", {"kind": "all"}), ("DELETE", "/api/scenes/s01-arrival", {}),
                              ("POST", "/api/references", {"to": "character", "id": "mara", "image": png()}),
                              ("DELETE", "/api/transitions/s01-arrival/s02-package", {})):
        r = call(app, method, url, body)
        assert r.status_code == 409 and "read-only" in r.get_json()["error"], url
    assert store.scene("s01-arrival") is not None and len(store.transitions()) == 10


# -- the queue ----------------------------------------------------------------------------------------------------


def test_run_requests_are_checked(studio):
    eng, app = studio
    for body, status in (({"kind": "everything"}, 400), ({"kind": "branch"}, 400), ({"kind": "branch", "target": "zz"}, 404),
                         ({"kind": "scene", "target": "nope"}, 404), ({"kind": "all", "target": "s01-arrival"}, 400),
                         ({"kind": "all", "takes": 0}, 400), ({"kind": "all", "extra": 1}, 400),
                         ({"kind": "scene", "target": "../x"}, 400)):
        r = call(app, "POST", "/api/runs", body)
        assert r.status_code == status, (body, r.get_json())
    assert call(app, "POST", "/api/jobs/99/cancel").status_code == 404
    assert app.test_client().get("/api/jobs/99").status_code == 404
    assert viewer_of(app).worker.jobs() == []


def test_the_queue_runs_in_order_and_cancels_waiting_and_running_jobs(studio, tiny_runtime):
    eng, app = studio
    gen = tiny_runtime["generator"]
    worker = viewer_of(app).worker
    gate = threading.Event()
    before = gen.on_step

    def hold(step):  # the first run waits inside its first denoising step until the test let it go
        gate.wait(60)

    gen.on_step = hold
    try:
        first = call(app, "POST", "/api/runs", {"kind": "all"}).get_json()["job"]
        second = call(app, "POST", "/api/scenes/s01-arrival/generate", {"takes": 2}).get_json()["job"]
        third = call(app, "POST", "/api/runs", {"kind": "branch", "target": "s01-arrival"}).get_json()["job"]
        assert call(app, "POST", "/api/runs", {"kind": "all"}).status_code == 409  # the same run, already queued
        wait_state(app, first["id"], ["running"])
        r = call(app, "POST", f"/api/jobs/{second['id']}/cancel")
        assert r.status_code == 200 and r.get_json()["job"]["state"] == "cancelled"
        r = call(app, "POST", f"/api/jobs/{first['id']}/cancel")
        assert r.get_json()["job"]["state"] == "cancelling"
        gate.set()
        j1 = wait_state(app, first["id"], ["cancelled", "done", "failed"])
        j3 = wait_state(app, third["id"], ["done", "failed", "cancelled"])
    finally:
        gate.set()
        gen.on_step = before
    assert j1["state"] == "cancelled" and j1["done"] == [] and j1["duration_s"] > 0
    assert j3["state"] == "done" and j3["done"] == list(
        ("s01-arrival", "s02-package", "s03-keeper", "s04-meeting", "s06-escape"))
    events = [(e.kind, __import__("json").loads(e.payload).get("job")) for e in eng.store.events_since(0)
              if e.kind.startswith("job.")]
    assert ("job.started", second["id"]) not in events and ("job.cancelled", second["id"]) in events
    assert events.index(("job.started", third["id"])) > events.index(("job.cancelled", first["id"]))
    progress = [e for e in eng.store.events_since(0) if e.kind == "job.progress"]
    assert progress and all("eta_s" in __import__("json").loads(e.payload)["progress"] for e in progress)
    history = {j["id"]: j for j in app.test_client().get("/api/jobs").get_json()["jobs"]}
    assert [history[j["id"]]["state"] for j in (first, second, third)] == ["cancelled", "cancelled", "done"]
    assert all(s.status == "done" for s in eng.store.scenes())
    assert worker.busy() is False


# -- references ---------------------------------------------------------------------------------------------------


def test_reference_uploads_are_checked_and_attached(studio):
    from storygraph.engine.media import load_image

    eng, app = studio
    bad = [({"to": "character", "id": "mara", "image": "not base64!"}, 400, "base64"),
           ({"to": "character", "id": "mara", "image": base64.b64encode(b"plain text").decode()}, 400, "image"),
           ({"to": "character", "id": "mara", "image": png(size=(5000, 10))}, 400, "pixels"),
           ({"to": "planet", "id": "mara", "image": png()}, 400, "to"),
           ({"to": "scene", "id": "s01-arrival", "image": png()}, 400, "kind"),
           ({"to": "scene", "id": "s01-arrival", "kind": "costume", "character": "tomas", "image": png()}, 400,
            "characters"),
           ({"to": "scene", "id": "nope", "kind": "place", "image": png()}, 404, "nope"),
           ({"to": "character", "id": "nobody", "image": png()}, 404, "nobody")]
    for body, status, word in bad:
        r = call(app, "POST", "/api/references", body)
        assert r.status_code == status and word in r.get_json()["error"], (body.get("to"), r.get_json())
    assert all(not c.reference_path for c in eng.store.characters())
    assert eng.store.scene("s01-arrival").spec.references == ()
    huge = {"to": "character", "id": "mara", "image": "A" * (25 << 20)}
    assert call(app, "POST", "/api/references", huge).status_code == 413

    r = call(app, "POST", "/api/references", {"to": "character", "id": "mara", "image": png((1, 2, 3))})
    assert r.status_code == 201, r.get_json()
    mara = next(c for c in eng.store.characters() if c.id == "mara")
    assert (load_image(mara.reference_path) == [1, 2, 3]).all()
    assert app.test_client().get(r.get_json()["url"]).status_code == 200
    shown = app.test_client().get("/api/reference-image/character/mara")
    assert shown.status_code == 200 and shown.mimetype == "image/png"
    r = call(app, "POST", "/api/references", {"to": "scene", "id": "s03-keeper", "kind": "place", "image": png((9, 9, 9)),
                                              "strength": 0.7})
    assert r.status_code == 201
    refs = eng.store.scene("s03-keeper").spec.references
    assert [(x.kind, x.character, x.strength) for x in refs] == [("place", None, 0.7)]
    assert app.test_client().get("/api/scenes/s03-keeper").get_json()["spec"]["references"][0]["image_url"] == \
        "/api/reference-image/scene/s03-keeper/0"
    assert app.test_client().get("/api/reference-image/scene/s03-keeper/0").status_code == 200
    assert app.test_client().get("/api/reference-image/scene/s03-keeper/1").status_code == 404
    assert call(app, "DELETE", "/api/references", {"to": "scene", "id": "s03-keeper", "kind": "place"}).status_code == 200
    assert eng.store.scene("s03-keeper").spec.references == ()


def test_a_story_file_reference_is_shown_only_as_an_image(tmp_path):
    from storygraph.domain import Character

    store, _ = example_store(tmp_path / "story")
    secret = tmp_path / "secret.txt"
    secret.write_text("password", encoding="utf-8")
    store.upsert_character(Character("mara", "Mara", "d", str(secret)))
    app = make_app(store)
    try:
        r = app.test_client().get("/api/reference-image/character/mara")
        assert r.status_code == 404 and b"password" not in r.data
        assert app.test_client().get("/api/reference-image/character/tomas").status_code == 404
    finally:
        viewer_of(app).close()
        store.close()


# -- deleting -----------------------------------------------------------------------------------------------------


def test_deleting_refuses_to_orphan_generated_scenes(studio):
    """A scene with a generated scene after it is not deleted (409 naming it); cutting the transition into a generated
    scene leaves it whole, on a timeline of its own, stale (it was made as what followed)."""
    eng, app = studio
    commit_take(eng.store, "s01-arrival")
    commit_take(eng.store, "s02-package")
    r = call(app, "DELETE", "/api/scenes/s01-arrival")
    assert r.status_code == 409 and "s02-package" in r.get_json()["error"]
    assert eng.store.scene("s01-arrival") is not None
    r = call(app, "DELETE", "/api/transitions/s01-arrival/s02-package")
    assert r.status_code == 200 and "s02-package" in r.get_json()["stale"]
    s02 = eng.store.scene("s02-package")
    assert s02.placement.parent_id is None and s02.status == "stale" and s02.chosen_take == 0
    assert call(app, "DELETE", "/api/scenes/nope").status_code == 404
    assert call(app, "DELETE", "/api/transitions/s01-arrival/s03-keeper").status_code == 404
    r = call(app, "DELETE", "/api/transitions/s02-package/s03-keeper")
    assert r.status_code == 200
    r = call(app, "DELETE", "/api/scenes/s02-package")
    assert r.status_code == 200
    g = app.test_client().get("/api/graph").get_json()
    assert "s02-package" not in {n["data"]["id"] for n in g["nodes"]}
    assert {b["branch"] for b in g["branches"]} == {"s01-arrival", "s03-keeper"}
    kinds = [e.kind for e in eng.store.events_since(0)]
    assert "scene.deleted" in kinds and "transition.deleted" in kinds


# -- timelines and cuts -------------------------------------------------------------------------------------------


def test_a_cut_is_made_once_and_remade_when_a_take_changes(follower):
    from storygraph.engine.media import video_info

    store, story, app = follower
    assert call(app, "POST", "/api/cut", {}).status_code == 409  # nothing made yet
    for sid in ("s01-arrival", "s02-package"):
        commit_take(store, sid, video=True)
    c = app.test_client()
    tl = c.get("/api/timelines").get_json()
    assert tl["main"] == "s01-arrival" and {t["branch"] for t in tl["timelines"]} == {"s01-arrival", "s08-overboard"}
    r = call(app, "POST", "/api/cut", {"branch": "s01-arrival"})
    assert r.status_code == 200, r.get_json()
    d = r.get_json()
    assert [s["scene_id"] for s in d["scenes"]] == ["s01-arrival", "s02-package"] and d["stopped_at"] == "s03-keeper"
    path = Path(store.path) / "media" / d["url"].removeprefix("/media/")
    info = video_info(path)
    assert info["frames"] == 18 and d["duration_s"] == pytest.approx(18 / 8)
    made = path.stat().st_mtime_ns
    assert call(app, "POST", "/api/cut", {}).get_json()["url"] == d["url"] and path.stat().st_mtime_ns == made
    commit_take(store, "s02-package", take=1, video=True)
    again = call(app, "POST", "/api/cut", {"branch": "s01-arrival"}).get_json()
    assert again["url"] != d["url"] and not path.exists()
    assert [s["take"] for s in again["scenes"]] == [0, 1]
    assert call(app, "POST", "/api/cut", {"branch": "nowhere"}).status_code == 404
    other = call(app, "POST", "/api/cut", {"branch": "s08-overboard"}).get_json()  # the branch follows s01..s07
    assert [s["scene_id"] for s in other["scenes"]] == ["s01-arrival", "s02-package"]


# -- console results as a graph -----------------------------------------------------------------------------------


def test_console_results_carry_the_nodes_and_relationships_they_return(follower):
    store, story, app = follower
    r = call(app, "POST", "/api/query", {"cypher": "MATCH (a:Scene)-[n:NEXT]->(b:Scene) RETURN a, n, b"})
    g = r.get_json()["graph"]
    refs = {n["data"]["id"]: n["data"]["ref"] for n in g["nodes"]}
    got = sorted((refs[e["data"]["source"]], refs[e["data"]["target"]]) for e in g["edges"])
    assert got == sorted((t.from_id, t.to_id) for t in story.transitions)
    assert len(g["nodes"]) == len(story.scenes)
    r = call(app, "POST", "/api/query", {"cypher": "MATCH (s:Scene) RETURN s.id AS id"})
    assert r.get_json()["graph"] == {"nodes": [], "edges": []}
    r = call(app, "POST", "/api/query", {"cypher": "MATCH p = (a:Scene)-[:NEXT*2..2]->(b:Scene) "
                                                   "WHERE a.id = 's01-arrival' RETURN p"})
    g = r.get_json()["graph"]
    assert len(g["edges"]) == 2 and len(g["nodes"]) == 3
