"""The viewer's guards: token and same-origin on state-changing requests, Host names, media paths, binding."""

from __future__ import annotations

import os
import socket

import pytest

from support import commit_take, example_store, write_png
from storygraph.webviz import RemoteBindRefused, create_app, make_server, serve, start, viewer_of
from storygraph.webviz.security import MediaPathRefused, is_loopback_host, safe_media_path

SECRET = "top-secret-content-7f3a"


@pytest.fixture
def story(tmp_path):
    store, story = example_store(tmp_path / "story")
    yield store, story
    store.close()


@pytest.fixture
def app(story):
    a = create_app(story[0], story_dir=story[0].path, warm=False, keepalive_s=0.3)
    a.testing = True
    viewer_of(a).start()
    yield a
    viewer_of(a).close()


QUERY = {"cypher": "MATCH (s:Scene) RETURN count(s) AS n"}


def token(app):
    return app.config["STORYGRAPH_TOKEN"]


# -- token and origin ----------------------------------------------------------------------------


def test_state_changing_requests_need_the_token(app):
    c = app.test_client()
    assert c.post("/api/query", json=QUERY).status_code == 401
    r = c.post("/api/query", json=QUERY, headers={"X-Storygraph-Token": "wrong"})
    assert r.status_code == 401 and r.is_json and "token" in r.get_json()["error"]
    r = c.post("/api/query", json=QUERY, headers={"X-Storygraph-Token": token(app)[:-1]})
    assert r.status_code == 401
    assert c.post("/api/query", json=QUERY, headers={"X-Storygraph-Token": token(app)}).status_code == 200
    for url, method in (("/api/scenes/s01-arrival", "PATCH"), ("/api/scenes/s01-arrival/generate", "POST"),
                        ("/api/scenes", "POST"), ("/api/characters", "POST"), ("/api/transitions", "POST")):
        assert c.open(url, method=method, json={"takes": 1}).status_code == 401, url


def test_tokens_differ_between_apps_and_can_be_given(story):
    a, b = create_app(story[0], warm=False), create_app(story[0], warm=False, token="given-token")
    try:
        assert len(token(a)) >= 32 and token(a) != token(b) and token(b) == "given-token"
    finally:
        viewer_of(a).close()
        viewer_of(b).close()


def test_cross_origin_requests_are_refused_even_with_the_token(app):
    c = app.test_client()
    ok = {"X-Storygraph-Token": token(app)}
    for extra in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://localhost:9999"},
                  {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                  {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"}):
        r = c.post("/api/query", json=QUERY, headers={**ok, **extra})
        assert r.status_code == 403, extra
        assert "refused" in r.get_json()["error"]
    same = c.post("/api/query", json=QUERY, headers={**ok, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


def test_form_posts_are_refused(app):
    """A cross-site HTML form can only send form or text bodies; the API takes JSON only."""
    c = app.test_client()
    r = c.post("/api/query", data={"cypher": "MATCH (n) RETURN n"}, headers={"X-Storygraph-Token": token(app)})
    assert r.status_code == 415
    r = c.post("/api/query", data='{"cypher": "MATCH (n) RETURN n"}', content_type="text/plain",
               headers={"X-Storygraph-Token": token(app)})
    assert r.status_code == 415


def test_unknown_host_names_are_refused(app):
    """A DNS-rebinding page reaches the viewer under its own host name; it gets nothing."""
    c = app.test_client()
    for host in ("evil.example", "evil.example:80", "192.168.1.10"):
        r = c.get("/api/graph", headers={"Host": host})
        assert r.status_code == 403, host
        assert b"s01-arrival" not in r.data
    for host in ("localhost", "127.0.0.1:8765", "[::1]:8765"):
        assert c.get("/api/info", headers={"Host": host}).status_code == 200, host


def test_the_page_holds_the_token_only_for_whoever_brought_it(app):
    c = app.test_client()
    t = token(app)
    assert t not in c.get("/").get_data(as_text=True)
    assert t not in c.get("/?token=wrong").get_data(as_text=True)
    page = c.get(f"/?token={t}")
    assert page.status_code == 200 and t in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"


def test_security_headers_and_json_errors(app):
    r = app.test_client().get("/api/graph")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    bad = app.test_client().post("/api/query", data="{", content_type="application/json",
                                 headers={"X-Storygraph-Token": token(app)})
    assert bad.status_code == 400 and bad.get_json() == {"error": "expected a JSON object", "status": 400}


# -- media ---------------------------------------------------------------------------------------


@pytest.fixture
def media(story, tmp_path):
    store, _ = story
    commit_take(store, "s01-arrival")
    root = store.path / "media"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (store.path / "secret.txt").write_text(SECRET)  # in the story folder, next to media/ but not in it
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / ".hidden").write_text(SECRET)
    write_png(outside / "inner.png", 1)
    os.symlink(root / "s01-arrival" / "take-0" / "last.png", root / "alias.png")
    return root


@pytest.mark.parametrize("url", [
    "/media/../secret.txt",
    "/media/..%2fsecret.txt",
    "/media/%2e%2e/secret.txt",
    "/media/%2E%2E%2Fsecret.txt",
    "/media/s01-arrival/../../secret.txt",
    "/media/s01-arrival/%2e%2e/%2e%2e/secret.txt",
    "/media/%252e%252e/secret.txt",
    "/media/%2Ftmp%2Fsecret.txt",
    "/media/..%5csecret.txt",
    "/media/escape/secret.txt",
    "/media/escape.txt",
    "/media/escape/inner.png",
    "/media/.hidden",
    "/media/s01-arrival/take-0/last.png%00.txt",
])
def test_media_paths_leaving_the_media_folder_are_refused(app, media, url):
    r = app.test_client().get(url)
    assert r.status_code in (400, 403, 404), (url, r.status_code)
    assert SECRET.encode() not in r.data
    assert r.is_json or r.status_code in (400, 404)


def test_absolute_media_paths_are_refused(app, media, tmp_path):
    c = app.test_client()
    target = str(tmp_path / "outside" / "secret.txt")
    for url in ("/media/" + target, "/media//" + target.lstrip("/"), "/media/%2F" + target.lstrip("/")):
        r = c.get(url, follow_redirects=True)
        assert r.status_code in (403, 404), url
        assert SECRET.encode() not in r.data


def test_media_inside_the_folder_are_served(app, media):
    c = app.test_client()
    png = (media / "s01-arrival" / "take-0" / "last.png").read_bytes()
    r = c.get("/media/s01-arrival/take-0/last.png")
    assert r.status_code == 200 and r.data == png and r.mimetype == "image/png"
    assert c.get("/media/alias.png").data == png  # a link that stays inside is fine
    assert c.get("/media/s01-arrival").status_code == 404  # a folder is not a file
    assert c.get("/media/nope.png").status_code == 404


def test_safe_media_path_unit(tmp_path):
    root = tmp_path / "media"
    write_png(root / "a" / "b.png", 0)
    assert safe_media_path(root, "a/b.png") == (root / "a" / "b.png").resolve()
    for bad in ("", "/etc/passwd", "a/../../x", "a//b.png", "./a/b.png", "a\\b.png", "C:/x", "a/\x00"):
        with pytest.raises(MediaPathRefused):
            safe_media_path(root, bad)


# -- binding -------------------------------------------------------------------------------------


def test_loopback_detection():
    for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback_host(h), h
    for h in ("0.0.0.0", "::", "", "192.168.0.2", "10.0.0.1", "example.org", "localhost.evil.example"):
        assert not is_loopback_host(h), h


def test_the_server_refuses_non_loopback_without_the_flag(app):
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        with pytest.raises(RemoteBindRefused):
            make_server(app, host, 0)
        with pytest.raises(RemoteBindRefused):
            serve(app, host=host, port=0, announce=lambda s: None)
    srv = make_server(app, "127.0.0.1", 0)
    try:
        assert srv.host == "127.0.0.1" and srv.port > 0
    finally:
        srv.server_close()


def test_remote_binding_with_the_flag(story):
    app = create_app(story[0], warm=False)
    srv = make_server(app, "0.0.0.0", 0, allow_remote=True)
    try:
        assert srv.port > 0
        # reached under names this viewer cannot know: Host checking gives way, the token still guards writes
        assert viewer_of(app).config.allowed_hosts is None
    finally:
        srv.server_close()
        viewer_of(app).close()


def test_a_running_server_answers_on_loopback_and_serves_threads(story):
    import http.client

    app = create_app(story[0], warm=False, keepalive_s=0.3)
    rs = start(app)
    try:
        host, port = rs.server.host, rs.server.port
        stream = socket.create_connection((host, port), timeout=5)  # an open event stream holds one thread ...
        stream.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"text/event-stream" in stream.recv(4096)
        conn = http.client.HTTPConnection(host, port, timeout=5)  # ... while other requests are answered
        conn.request("GET", "/api/info")
        resp = conn.getresponse()
        assert resp.status == 200 and b'"editable":false' in resp.read().replace(b" ", b"")
        stream.close()
    finally:
        rs.stop()
