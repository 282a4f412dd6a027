"""The viewer's JSON API and event stream, through Flask's test client over a real embedded store."""

from __future__ import annotations

import threading
import time

import pytest

from support import EXAMPLE, commit_take, example_store, graph_expectations, read_sse
from storygraph.domain import ConditionRecord
from storygraph.webviz import create_app, viewer_of


@pytest.fixture
def story(tmp_path):
    store, story = example_store(tmp_path / "story")
    yield store, story
    store.close()


def make_app(store, engine=None, **options):
    """A started viewer (its event hub follows the log) serving the store's folder's media."""
    options.setdefault("keepalive_s", 0.3)
    options.setdefault("poll_s", 0.02)
    app = create_app(store, engine, story_dir=store.path, warm=False, **options)
    app.testing = True
    viewer_of(app).start()
    return app


@pytest.fixture
def app(story):
    a = make_app(story[0])
    yield a
    viewer_of(a).close()


def post(client, app, url, body, method="POST"):
    return client.open(url, method=method, json=body,
                       headers={"X-Storygraph-Token": app.config["STORYGRAPH_TOKEN"]})


def test_the_factory_starts_no_thread_and_start_does(story):
    before = set(threading.enumerate())
    app = create_app(story[0], story_dir=story[0].path)
    assert set(threading.enumerate()) == before  # building the app starts nothing
    viewer_of(app).start()
    try:
        started = {t.name for t in set(threading.enumerate()) - before}
        assert "storygraph-events" in started
    finally:
        viewer_of(app).close()


# -- the graph -----------------------------------------------------------------------------------


def test_graph_has_every_scene_character_environment_and_edge(story, app):
    _, st = story
    want = graph_expectations(st)
    g = app.test_client().get("/api/graph").get_json()
    kinds = {}
    for n in g["nodes"]:
        kinds[n["data"]["type"]] = kinds.get(n["data"]["type"], 0) + 1
        assert set(n["position"]) == {"x", "y"}
    edges = {}
    for e in g["edges"]:
        edges[e["data"]["type"]] = edges.get(e["data"]["type"], 0) + 1
    assert kinds == {"scene": want["scenes"], "character": want["characters"], "environment": want["environments"]}
    assert edges == {"next": want["next"], "appears": want["appears"], "setin": want["setin"]}
    assert g["counts"]["scenes"] == want["scenes"] and g["counts"]["transitions"] == want["next"]
    assert g["story"]["title"] == st.title
    assert g["editable"] is False and g["layout"] == "preset" and g["dagre"] is True and g["big"] is False
    # NEXT carries kind, gap and decay; decay falls with the gap
    nxt = {(e["data"]["source"], e["data"]["target"]): e["data"] for e in g["edges"] if e["data"]["type"] == "next"}
    for t in st.transitions:
        d = nxt[(t.from_id, t.to_id)]
        assert d["kind"] == t.kind and d["gap"] == pytest.approx(t.effective_gap)
        assert t.kind in g_classes(g, f"next:{t.from_id}>{t.to_id}")
    long_gap = max(nxt.values(), key=lambda d: d["gap"])
    short_gap = min(nxt.values(), key=lambda d: d["gap"])
    assert long_gap["decay"] < short_gap["decay"]


def g_classes(g, element_id):
    for el in g["nodes"] + g["edges"]:
        if el["data"]["id"] == element_id:
            return el["classes"].split()
    raise KeyError(element_id)


def test_timeline_positions_follow_the_clock_and_separate_branches(story, app):
    store, st = story
    g = app.test_client().get("/api/graph").get_json()
    pos = {n["data"]["id"]: n["position"] for n in g["nodes"] if n["data"]["type"] == "scene"}
    for t in st.transitions:
        assert pos[t.to_id]["x"] > pos[t.from_id]["x"]  # later in story time is further right
    # the branch after s07-dawn: the two children sit on different lanes
    children = [t.to_id for t in st.transitions if t.from_id == "s07-dawn"]
    assert len(children) == 2
    assert pos[children[0]]["y"] != pos[children[1]]["y"]
    assert g["lanes"] >= 2


def test_the_graph_follows_commits_and_new_scenes(story, app):
    store, st = story
    c = app.test_client()
    first = c.get("/api/graph").get_json()
    commit_take(store, "s02-package")
    g = c.get("/api/graph").get_json()
    assert g["last_seq"] > first["last_seq"]
    node = next(n for n in g["nodes"] if n["data"]["id"] == "s02-package")
    assert node["data"]["status"] == "done" and node["data"]["thumb"].startswith("/media/s02-package/")
    assert node["position"] == next(n for n in first["nodes"] if n["data"]["id"] == "s02-package")["position"]
    observed = [e for e in g["edges"] if e["data"]["type"] == "appears" and e["data"]["target"] == "s02-package"]
    assert [e["data"]["observed"] for e in observed] == [True]
    assert len(g["edges"]) == len(first["edges"])
    # a scene written elsewhere, announced by an Event, is in the next graph
    from storygraph.domain import Placement, SceneSpec

    store.upsert_scene(SceneSpec("s00-prologue", "a gull on a post"), Placement("s00-prologue", 0.0, "s00-prologue", 0))
    store.append_event("scene.added", "s00-prologue")
    g = c.get("/api/graph").get_json()
    assert "s00-prologue" in {n["data"]["id"] for n in g["nodes"]}
    assert g["counts"]["scenes"] == len(st.scenes) + 1


def test_scene_panel_has_media_scores_takes_and_conditioning(story, app, tmp_path):
    store, _ = story
    commit_take(store, "s01-arrival", video=True)
    mara_app = store.appearances(character_id="mara", with_vectors=False)[0]
    conds = [ConditionRecord("extension", "Scene", "s01-arrival", 0, 1.0, None, "continuous: last frames of s01-arrival",
                             "extend"),
             ConditionRecord("keyframe", "Appearance", mara_app.id, 8, 0.6, 0.77, "nearest prior appearance of mara",
                             "keyframe")]
    commit_take(store, "s02-package", 0, conditioned_on=conds, identity=0.9)
    commit_take(store, "s02-package", 1, choose=False, identity=0.4)
    c = app.test_client()
    d = c.get("/api/scenes/s02-package").get_json()
    assert d["status"] == "done" and d["chosen_take"] == 0
    assert d["scores"]["identity"] == pytest.approx(0.9)
    assert d["thumb_url"].startswith("/media/s02-package/take-0/")
    assert [t["take"] for t in d["takes"]] == [0, 1]
    assert [t["chosen"] for t in d["takes"]] == [True, False]
    roles = {x["role"]: x for x in d["conditioning"]}
    assert roles["extension"]["scene_id"] == "s01-arrival" and roles["extension"]["mode"] == "extend"
    assert roles["keyframe"]["character_id"] == "mara" and roles["keyframe"]["scene_id"] == "s01-arrival"
    assert roles["keyframe"]["reason"] == "nearest prior appearance of mara"
    assert roles["keyframe"]["thumb_url"].startswith("/media/s01-arrival/")
    assert d["transition_in"]["from"] == "s01-arrival" and d["transition_in"]["kind"] == "continuous"
    # the media the panel links to are served, byte for byte
    png = c.get(d["thumb_url"])
    assert png.status_code == 200 and png.data == (store.path / "media/s02-package/take-0/last.png").read_bytes()
    video = c.get(c.get("/api/scenes/s01-arrival").get_json()["video_url"], headers={"Range": "bytes=0-99"})
    assert video.status_code == 206 and len(video.data) == 100


def test_scene_element_reflects_a_commit(story, app):
    store, _ = story
    c = app.test_client()
    before = c.get("/api/scenes/s04-meeting/element").get_json()
    assert before["node"]["data"]["status"] == "planned" and before["node"]["data"]["thumb"] is None
    assert {e["data"]["source"] for e in before["edges"]} == {"mara", "ines"}
    assert all(not e["data"]["observed"] for e in before["edges"])
    commit_take(store, "s04-meeting")
    after = c.get("/api/scenes/s04-meeting/element").get_json()
    assert after["node"]["data"]["status"] == "done" and after["node"]["data"]["thumb"].startswith("/media/")
    strengths = {e["data"]["source"]: e["data"]["strength"] for e in after["edges"]}
    assert all(e["data"]["observed"] for e in after["edges"])
    assert strengths["mara"] != strengths["ines"]  # strength comes from each character's appearance


def test_character_panel_lists_appearances_along_the_story(story, app):
    store, st = story
    for sid in ("s01-arrival", "s02-package", "s04-meeting"):
        commit_take(store, sid)
    d = app.test_client().get("/api/characters/mara").get_json()
    assert d["name"] == "Mara" and d["decay_tau"] == pytest.approx(30)
    assert [a["scene_id"] for a in d["appearances"]] == ["s01-arrival", "s02-package", "s04-meeting"]
    clocks = [a["clock"] for a in d["appearances"]]
    assert clocks == sorted(clocks)
    assert all(a["thumb_url"].startswith("/media/") for a in d["appearances"])
    assert {s["id"] for s in d["scenes"]} == {s.id for s in st.scenes if "mara" in s.characters}


def test_not_found_and_wrong_method_answer_json(app):
    c = app.test_client()
    for url in ("/api/scenes/nope", "/api/scenes/nope/element", "/api/characters/nope", "/api/nothing-here"):
        r = c.get(url)
        assert r.status_code == 404 and r.is_json and r.get_json()["status"] == 404
    r = c.delete("/api/graph", headers={"X-Storygraph-Token": app.config["STORYGRAPH_TOKEN"]})
    assert r.status_code == 405 and r.get_json()["status"] == 405


# -- the Cypher console --------------------------------------------------------------------------


def test_console_returns_rows(story, app):
    _, st = story
    r = post(app.test_client(), app, "/api/query",
             {"cypher": "MATCH (s:Scene) RETURN s.id AS id, s.clock AS clock ORDER BY s.clock"})
    assert r.status_code == 200, r.get_json()
    d = r.get_json()
    assert d["columns"] == ["id", "clock"]
    assert sorted(row[0] for row in d["rows"]) == sorted(s.id for s in st.scenes)
    assert d["row_count"] == len(st.scenes) and not d["truncated"]
    nodes = post(app.test_client(), app, "/api/query", {"cypher": "MATCH (c:Character) RETURN c"}).get_json()
    assert {row[0]["id"] for row in nodes["rows"]} == {c.id for c in st.characters}


def test_console_refuses_writes_and_the_graph_stays(story, app):
    c = app.test_client()
    for q in ("CREATE (:Scene {id: 'intruder'})", "MATCH (s:Scene) SET s.title = 'x' RETURN s",
              "MATCH (s:Scene) DETACH DELETE s", "MATCH (n) RETURN n; MATCH (m) RETURN m"):
        r = post(c, app, "/api/query", {"cypher": q})
        assert r.status_code == 403, q
        assert "read-only" in r.get_json()["error"]
    n = post(c, app, "/api/query", {"cypher": "MATCH (s:Scene) RETURN count(s) AS n"}).get_json()["rows"][0][0]
    assert n == len(story[1].scenes)
    assert story[0].scene("intruder") is None


def test_console_errors_and_time_limit(story):
    app = make_app(story[0], query_timeout_s=60, max_query_rows=3)
    c = app.test_client()
    bad = post(c, app, "/api/query", {"cypher": "MATCH (n RETURN n"})  # the guard's grammar refuses it
    assert bad.status_code == 403 and "missing ')'" in bad.get_json()["error"]
    unknown = post(c, app, "/api/query", {"cypher": "MATCH (n:NoSuchLabel) RETURN n"})  # the engine's binder does
    assert unknown.status_code == 400 and "NoSuchLabel" in unknown.get_json()["error"]
    viewer_of(app).config.query_timeout_s = 0.05  # only this query must run out of time, however loaded the machine
    slow = post(c, app, "/api/query", {"cypher": "UNWIND range(1, 30000000) AS x RETURN sum(x) AS s"})
    assert slow.status_code == 400 and "time limit" in slow.get_json()["error"]
    viewer_of(app).config.query_timeout_s = 60
    many = post(c, app, "/api/query", {"cypher": "MATCH (s:Scene) RETURN s.id"}).get_json()
    assert len(many["rows"]) == 3 and many["truncated"] and many["row_count"] == 3 and many["max_rows"] == 3
    assert post(c, app, "/api/query", {"cypher": "  "}).status_code == 400
    viewer_of(app).close()
    quick = make_app(story[0], query_timeout_s=0.05)
    slow = post(quick.test_client(), quick, "/api/query", {"cypher": "UNWIND range(1, 30000000) AS x RETURN sum(x) AS s"})
    assert slow.status_code == 400 and "time limit" in slow.get_json()["error"]
    viewer_of(quick).close()


# -- the event stream ----------------------------------------------------------------------------


def test_stream_headers_and_hello(app):
    r = app.test_client().get("/events", buffered=False)
    try:
        assert r.status_code == 200
        assert r.mimetype == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
        msgs = read_sse(r, 2)
        assert msgs[0]["retry"].isdigit()
        assert msgs[1]["event"] == "hello" and int(msgs[1]["id"]) == viewer_of(app).store.last_event_seq()
    finally:
        r.close()


def test_stream_replays_from_last_event_id_header_and_query(story, app):
    store, _ = story
    seqs = [store.append_event("scene.note", f"s0{i}", {"i": i}) for i in range(1, 5)]
    c = app.test_client()
    for kwargs in ({"headers": {"Last-Event-ID": str(seqs[1])}}, {"query_string": {"lastEventId": seqs[1]}},
                   # the header (sent by a browser reconnecting by itself) wins over a stale query id
                   {"headers": {"Last-Event-ID": str(seqs[1])}, "query_string": {"lastEventId": seqs[0]}}):
        r = c.get("/events", buffered=False, **kwargs)
        try:
            msgs = [m for m in read_sse(r, 3) if "id" in m]
            assert [int(m["id"]) for m in msgs] == seqs[2:]
            assert [m["json"]["seq"] for m in msgs] == seqs[2:]
            assert msgs[0]["json"]["kind"] == "scene.note" and msgs[0]["json"]["payload"] == {"i": 3}
        finally:
            r.close()


def test_stream_resets_a_client_too_far_behind(story):
    store, _ = story
    app = make_app(store, replay_limit=3)
    seqs = [store.append_event("scene.note", "x") for _ in range(6)]
    r = app.test_client().get("/events?lastEventId=0", buffered=False)
    try:
        msgs = read_sse(r, 2)
        assert msgs[1]["event"] == "reset" and int(msgs[1]["id"]) == seqs[-1]
        assert msgs[1]["json"]["last_seq"] == seqs[-1]
    finally:
        r.close()
        viewer_of(app).close()
    # a client whose id is from another log (ahead of this one) also starts over
    app = make_app(store, replay_limit=3)
    r = app.test_client().get(f"/events?lastEventId={seqs[-1] + 50}", buffered=False)
    try:
        assert read_sse(r, 2)[1]["event"] == "reset"
    finally:
        r.close()
        viewer_of(app).close()


def test_stream_delivers_new_events_and_keepalives(story, app):
    store, _ = story
    r = app.test_client().get("/events", buffered=False)
    try:
        read_sse(r, 2)  # retry + hello
        seq = {}
        threading.Timer(0.2, lambda: seq.setdefault("v", commit_take(store, "s01-arrival"))).start()
        msgs = read_sse(r, 10, stop_on=lambda m: "json" in m)
        got = msgs[-1]
        assert got["json"]["kind"] == "take.committed" and got["json"]["ref_id"] == "s01-arrival"
        assert int(got["id"]) == seq["v"]
        msgs = read_sse(r, 1, timeout=5)
        assert msgs and msgs[0].get("comment") == "keep-alive"
    finally:
        r.close()


def test_bad_last_event_id_is_a_json_400(app):
    r = app.test_client().get("/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 400 and "event id" in r.get_json()["error"]


# -- editing and generating ----------------------------------------------------------------------


def test_a_follower_refuses_edits_and_generation(app):
    c = app.test_client()
    for url, body, method in (("/api/scenes", {"id": "x1", "action": "a"}, "POST"),
                              ("/api/scenes/s01-arrival", {"action": "b"}, "PATCH"),
                              ("/api/scenes/s01-arrival/generate", {"takes": 1}, "POST"),
                              ("/api/scenes/s01-arrival/choose", {"take": 0}, "POST"),
                              ("/api/characters", {"id": "z", "name": "Z", "description": "d"}, "POST"),
                              ("/api/transitions", {"from": "s01-arrival", "to": "s03-keeper"}, "POST")):
        r = post(c, app, url, body, method)
        assert r.status_code == 409, url
        assert "read-only" in r.get_json()["error"]


def _engine_or_skip(story_dir):
    try:
        from storygraph.engine.engine import StoryEngine
    except Exception as e:  # pragma: no cover - depends on the engine being installed whole
        pytest.skip(f"StoryEngine unavailable: {e}")
    eng = StoryEngine.open(story_dir)
    eng.load(EXAMPLE)
    return eng


@pytest.fixture
def studio(tmp_path):
    eng = _engine_or_skip(tmp_path / "studio")
    app = make_app(eng.store, eng)
    yield eng, app
    viewer_of(app).close()
    viewer_of(app).worker.close(wait=10)
    eng.close()


def test_studio_edits_go_through_the_engine(studio):
    eng, app = studio
    c = app.test_client()
    assert c.get("/api/graph").get_json()["editable"] is True
    r = post(c, app, "/api/characters", {"id": "oskar", "name": "Oskar", "description": "a harbour master", "decay_tau": 12})
    assert r.status_code == 201, r.get_json()
    assert {ch.id: ch.decay_tau for ch in eng.store.characters()}["oskar"] == pytest.approx(12)
    r = post(c, app, "/api/environments", {"id": "quay", "name": "Quay", "description": "a stone quay"})
    assert r.status_code == 201, r.get_json()
    r = post(c, app, "/api/scenes", {"id": "s10-coda", "action": "Oskar waves from the quay", "characters": ["oskar"],
                                     "environment": "quay", "parent_id": "s09-market", "kind": "cut", "gap": 4})
    assert r.status_code == 201, r.get_json()
    g = c.get("/api/graph").get_json()
    ids = {n["data"]["id"] for n in g["nodes"]}
    assert {"oskar", "quay", "s10-coda"} <= ids
    assert "next:s09-market>s10-coda" in {e["data"]["id"] for e in g["edges"]}
    assert eng.store.scene("s10-coda").clock == pytest.approx(eng.store.scene("s09-market").clock + 4)
    r = post(c, app, "/api/scenes/s10-coda", {"action": "Oskar lowers the flag", "frames": 17}, "PATCH")
    assert r.status_code == 200, r.get_json()
    assert eng.store.scene("s10-coda").spec.action == "Oskar lowers the flag"
    assert eng.store.scene("s10-coda").spec.frames == 17
    r = post(c, app, "/api/scenes/s10-coda", {"memory": "keyframe"}, "PATCH")
    assert r.status_code == 200 and eng.store.scene("s10-coda").spec.memory == "keyframe"
    assert c.get("/api/scenes/s10-coda").get_json()["spec"]["memory"] == "keyframe"
    r = post(c, app, "/api/scenes/s10-coda", {"memory": None}, "PATCH")
    assert r.status_code == 200 and eng.store.scene("s10-coda").spec.memory is None
    r = post(c, app, "/api/scenes", {"id": "s10-coda", "action": "again"})
    assert r.status_code == 409
    # every edit left an Event for the viewers following the log
    kinds = [e.kind for e in eng.store.events_since(0)]
    assert "scene.added" in kinds and "scene.updated" in kinds and "character.updated" in kinds


def test_studio_validates_input(studio):
    _, app = studio
    c = app.test_client()
    cases = [("/api/scenes/s01-arrival", {"nonsense": 1}, "PATCH"), ("/api/scenes/s01-arrival", {"frames": 10}, "PATCH"),
             ("/api/scenes/s01-arrival", {"characters": "mara"}, "PATCH"), ("/api/scenes", {"id": "../x", "action": "a"}, "POST"),
             ("/api/scenes/s01-arrival", {"memory": "pixels"}, "PATCH"),
             ("/api/scenes", {"id": "ok-id", "action": "a", "kind": "jump"}, "POST"),
             ("/api/scenes/s01-arrival/generate", {"takes": 0}, "POST"),
             ("/api/characters", {"id": "c", "name": "", "description": "d"}, "POST")]
    for url, body, method in cases:
        r = post(c, app, url, body, method)
        assert r.status_code == 400, (url, body, r.get_json())
        assert r.get_json()["error"]
    r = post(c, app, "/api/scenes/nope", {"action": "x"}, "PATCH")
    assert r.status_code == 404


def test_generation_runs_in_the_worker_and_reports_failure(studio):
    """With no models configured the engine fails; the job says so and the failure is in the Event log."""
    eng, app = studio
    c = app.test_client()
    r = post(c, app, "/api/scenes/s01-arrival/generate", {"takes": 2})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()["job"]
    assert job["takes"] == 2 and job["scene_id"] == "s01-arrival"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = {j["id"]: j for j in c.get("/api/jobs").get_json()["jobs"]}
        if jobs[job["id"]]["state"] in ("done", "failed"):
            break
        time.sleep(0.05)
    j = jobs[job["id"]]
    kinds = [e.kind for e in eng.store.events_since(0) if e.ref_id == "s01-arrival"]
    assert "job.queued" in kinds and "job.started" in kinds
    if j["state"] == "failed":
        assert j["error"] and "job.failed" in kinds
    else:  # models were found after all: then the scene was generated
        assert eng.store.scene("s01-arrival").status == "done" and "job.finished" in kinds


def test_choosing_a_take_goes_through_the_engine(studio):
    eng, app = studio
    commit_take(eng.store, "s01-arrival", 0, identity=0.9)
    commit_take(eng.store, "s01-arrival", 1, choose=False, identity=0.5)
    c = app.test_client()
    assert [t["chosen"] for t in c.get("/api/scenes/s01-arrival").get_json()["takes"]] == [True, False]
    r = post(c, app, "/api/scenes/s01-arrival/choose", {"take": 1})
    assert r.status_code == 200, r.get_json()
    d = c.get("/api/scenes/s01-arrival").get_json()
    assert d["chosen_take"] == 1 and [t["chosen"] for t in d["takes"]] == [False, True]
    assert d["thumb_url"].startswith("/media/s01-arrival/take-1/")
    assert post(c, app, "/api/scenes/s01-arrival/choose", {"take": 7}).status_code == 404
    assert "take.chosen" in [e.kind for e in eng.store.events_since(0)]
