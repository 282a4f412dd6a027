"""The console from outside: reading a story another process holds, option values, bounded answers.

* ``storygraph query`` / ``show`` answer while ``storygraph studio`` holds the same embedded story (they ask it);
* bad option values and bodies are clear errors (exit 2 / HTTP 400), never tracebacks;
* a query that would return a million rows returns ``max_rows`` with ``truncated`` and the process's memory
  stays flat; the studio answers ``/api/info`` quickly while a slow console query runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor.yaml"
CLI = [sys.executable, "-m", "storygraph.cli"]
COUNT = "MATCH (s:Scene) RETURN count(s) AS n"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def sg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def story_dir(tmp_path):
    d = tmp_path / "harbor"
    r = sg("load", EXAMPLE, "--graph", d)
    assert r.returncode == 0, r.stderr
    return d


def _scene_count() -> int:
    from storygraph.storyfile import load_story

    return len(load_story(EXAMPLE).scenes)


def test_query_and_show_answer_while_studio_holds_the_story(story_dir):
    studio = subprocess.Popen([*CLI, "studio", str(story_dir), "--port", "0"], cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder = story_dir / ".storygraph-holder.json"
        deadline = time.monotonic() + 60
        while not holder.exists():
            assert studio.poll() is None, studio.stderr.read()
            assert time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.1)
        assert holder.stat().st_mode & 0o777 == 0o600
        r = sg("query", COUNT, "--graph", story_dir, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [{"n": _scene_count()}]
        shown = sg("show", "--graph", story_dir)
        assert shown.returncode == 0, shown.stderr
        assert f"{_scene_count()} scenes" in shown.stdout
        refused = sg("query", "MATCH (s:Scene) DETACH DELETE s", "--graph", story_dir)
        assert refused.returncode == 3 and "read-only query refused" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert json.loads(sg("query", COUNT, "--graph", story_dir, "--json").stdout) == [{"n": _scene_count()}]
        assert not list((story_dir / ".snapshots").glob("*"))  # show removed its snapshot
    finally:
        studio.send_signal(signal.SIGINT)
        studio.wait(30)
    assert not (story_dir / ".storygraph-holder.json").exists()


def test_a_holder_without_a_service_is_named(story_dir):
    from storygraph.graphdb import open_store

    store = open_store(story_dir)  # holds the database; serves nothing
    try:
        r = sg("query", COUNT, "--graph", story_dir)
        assert r.returncode == 1 and f"process {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
    finally:
        store.close()


@pytest.mark.parametrize("value", ["0.0004", "1e-9", "-1", "nan", "inf", "0"])
def test_cli_refuses_bad_timeouts(story_dir, value):
    r = sg("query", COUNT, "--graph", story_dir, "--timeout", value)
    assert r.returncode == 2 and "time limit must be" in r.stderr and "Traceback" not in r.stderr


def test_cli_parameter_of_mixed_list_is_a_clear_error(story_dir):
    r = sg("query", "RETURN $x AS v", "--graph", story_dir, "--param", 'x=[1,"a"]')
    assert r.returncode == 2 and "query failed" in r.stderr and "Traceback" not in r.stderr


def test_cli_says_truncated(story_dir):
    r = sg("query", "UNWIND range(1, 5000) AS i RETURN i", "--graph", story_dir, "--json", "--max-rows", "7")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 7 and "truncated" in r.stderr


# -- the studio's console --------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    from storygraph.graphdb import open_store
    from storygraph.storyfile import load_story
    from storygraph.webviz import create_app
    from storygraph.webviz.server import start

    store = open_store(tmp_path / "story")
    store.load_story(load_story(EXAMPLE))
    app = create_app(store, None, warm=False, query_timeout_s=5.0, max_query_rows=1000)
    running = start(app)
    yield running
    running.stop()
    store.close()


def _post(running, path: str, body: bytes, timeout: float = 30):
    from storygraph.webviz.security import TOKEN_HEADER

    req = urllib.request.Request(running.url.rstrip("/") + path, data=body, method="POST", headers={
        "Content-Type": "application/json", TOKEN_HEADER: running.token})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_million_rows_come_back_as_max_rows_with_flat_memory(served):
    _post(served, "/api/query", json.dumps({"cypher": "RETURN 1"}).encode())  # the console's process is up
    before = _rss_kib()
    status, body = _post(served, "/api/query", json.dumps(
        {"cypher": "UNWIND range(1, 1000000) AS i RETURN i, 'row ' + string(i) AS label"}).encode())
    grew_mib = (_rss_kib() - before) / 1024
    assert status == 200, body
    assert body["row_count"] == 1000 and body["truncated"] is True and body["rows"][0] == [1, "row 1"]
    assert grew_mib < 32, f"the viewer's memory grew by {grew_mib:.0f} MiB"


def test_a_deeply_nested_json_body_is_a_400(served):
    body = b"[" * 200_000 + b"]" * 200_000
    status, answer = _post(served, "/api/query", body)
    assert status in (400, 413) and "error" in answer


def test_info_answers_while_a_slow_console_query_runs(served):
    slow = {"cypher": "UNWIND range(1, 200000000) AS x WITH x WHERE x % 7 = 100 RETURN count(*) AS n"}
    answer = {}

    def run_slow():
        answer["slow"] = _post(served, "/api/query", json.dumps(slow).encode())

    t = threading.Thread(target=run_slow)
    t.start()
    time.sleep(0.8)  # the query's process is now parsing or running
    latencies = []
    for _ in range(7):
        t0 = time.perf_counter()
        with urllib.request.urlopen(served.url.rstrip("/") + "/api/info", timeout=10) as resp:
            assert resp.status == 200
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.1)
    still_running = t.is_alive()
    t.join()
    assert still_running, "the slow query ended before the measurement"
    status, body = answer["slow"]
    assert status == 400 and "time limit" in body["error"]
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.2, latencies
