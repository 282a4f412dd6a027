"""Viewer benchmark: first render of a large story in headless Chromium, commit-to-screen latency, and
the server under 50 event-stream clients plus a steady API load. Prints one JSON object.

    python bench/viewer.py [--nodes 10000] [--seconds 60] [--clients 50] [--rps 20]

The story is synthetic: ``--nodes`` nodes in all (20 characters, 10 environments, the rest scenes, a new
branch every 40 scenes), loaded into an embedded store in a temporary folder; ``--done`` scenes near the
start get a committed take with a thumbnail. Everything runs on this machine: the server in this process
(threaded werkzeug, as ``storygraph studio`` runs it), the browser through Playwright with Debian's Chromium,
the load clients in a second process.

Figures:
  first_render_s        page request -> first frame with the graph drawn (graph JSON built at server start,
                        as a running viewer has it); median of --renders page loads
  first_render_cold_s   the same with the server's graph cache empty (the JSON built for this request)
  all_elements_s        page request -> every node and edge of the story drawn (a large story: Cytoscape draws
                        the region in view and an overview layer the rest, from the first frame on)
  cytoscape_all_s       page request -> every node and edge taken into Cytoscape and drawn by it (a large
                        story's rest is taken in small steps after the first frame, the page answering meanwhile)
  update_latency_ms_*   a take committed through the store (commit returned) -> the node redrawn on the page
  errors, p99_ms, ...   --clients SSE clients and --rps API requests/s for --seconds; errors count failed or
                        non-200 requests, stream failures, and events a stream client did not receive
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


# -- the story ------------------------------------------------------------------------------------


def synthetic_story(nodes: int, characters: int = 20, environments: int = 10, branch_every: int = 40, seed: int = 0):
    from storygraph.domain import Character, Environment, SceneSpec, Story, Transition

    rnd = random.Random(seed)
    chars = tuple(Character(f"c{i:02d}", f"Character {i}", f"character number {i}") for i in range(characters))
    envs = tuple(Environment(f"e{i:02d}", f"place number {i}", name=f"Place {i}") for i in range(environments))
    n_scenes = max(1, nodes - characters - environments)
    scenes, transitions = [], []
    kinds = ("continuous", "cut", "time_skip")
    for i in range(n_scenes):
        cast = tuple(sorted(rnd.sample([c.id for c in chars], 2)))
        scenes.append(SceneSpec(f"s{i:05d}", f"scene {i}", characters=cast, environment=envs[i % environments].id,
                                title=f"Scene {i}"))
        if i:
            parent = i - 1 if i % branch_every else rnd.randrange(max(0, i - 5 * branch_every), i)
            transitions.append(Transition(f"s{parent:05d}", f"s{i:05d}", rnd.choice(kinds)))
    return Story("bench", "Benchmark story", chars, envs, tuple(scenes), tuple(transitions))


_PNG_CACHE: dict = {}


def commit(store, scene_id: str, take: int = 0) -> int:
    """A take committed the way the engine commits one: media under media/, appearances, an Event."""
    import numpy as np
    from PIL import Image

    from storygraph.domain import Appearance, Scores
    from storygraph.graphdb import SceneCommit, TakeRecord

    rec = store.scene(scene_id)
    media = Path(store.path) / "media" / scene_id / f"take-{take}"
    media.mkdir(parents=True, exist_ok=True)
    last = media / "last.png"
    rng = np.random.default_rng(abs(hash((scene_id, take))) % 2**32)
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(last)
    apps = [Appearance(f"{scene_id}#t{take}#{cid}", cid, scene_id, 4, str(last), 1.0, rec.clock, 0.8,
                       [0.1] * 8, [0.2] * 8, rec.clock, rec.placement.branch, rec.placement.pos, take)
            for cid in rec.spec.characters]
    t = TakeRecord(scene_id, take, 1 + take, f"prompt {scene_id}", str(media / "video.mp4"), str(last), str(media),
                   Scores(0.3, 0.9, 0.9, 0.8, 0.7))
    return store.commit_take(SceneCommit(t, apps, []))


def build_store(folder: Path, nodes: int, done: int):
    from storygraph.graphdb import open_store

    store = open_store(folder)
    t = time.perf_counter()
    story = synthetic_story(nodes)
    store.load_story(story)
    load_s = time.perf_counter() - t
    for s in story.scenes[:done]:
        commit(store, s.id)
    return store, story, load_s


# -- the browser ----------------------------------------------------------------------------------


def poll(page, expression: str, timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = page.evaluate(expression)
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(interval)


def page_load(browser, url: str, timeout: float = 120.0) -> tuple[float, float, float]:
    """(first render s, all elements s, all in Cytoscape s) for one fresh page."""
    page = browser.new_page(viewport={"width": 1400, "height": 850})
    try:
        t0 = time.time() * 1000
        page.goto(url)
        first = poll(page, "window.storygraph && storygraph.firstRenderAt", timeout)
        full = poll(page, "window.storygraph && storygraph.fullRenderAt", timeout)
        cy_all = poll(page, "window.storygraph && (storygraph.cyAllAt || (!storygraph.big && storygraph.fullRenderAt))",
                      timeout)
        return (first - t0) / 1000, (full - t0) / 1000, (cy_all - t0) / 1000
    finally:
        page.close()


def update_latency(browser, url: str, store, scene_ids: list[str], n: int) -> list[float]:
    page = browser.new_page(viewport={"width": 1400, "height": 850})
    out = []
    try:
        page.goto(url)
        poll(page, "window.storygraph && storygraph.fullyLoaded && storygraph.live === 'live'", 120)
        for sid in scene_ids[:n]:
            commit(store, sid)
            t0 = time.time() * 1000  # the commit has returned: the take is in the graph
            at = poll(page, f"(storygraph.updates.find(u => u.id === {json.dumps(sid)} && u.status === 'done') || {{}}).at",
                      10, interval=0.005)
            out.append(at - t0)
            time.sleep(0.2)
    finally:
        page.close()
    return out


# -- the load clients (a separate process) ---------------------------------------------------------


def _request(host, port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def load_clients(host, port, token, clients, rps, seconds, scenes, characters, q_out, q_in):
    stop = threading.Event()
    received = [set() for _ in range(clients)]
    sse_errors = [0] * clients
    socks: list = []

    def sse(i):
        last = None
        while not stop.is_set():
            try:
                sock = socket.create_connection((host, port), timeout=40)
                socks.append(sock)
                qs = f"?lastEventId={last}" if last is not None else ""
                sock.sendall(f"GET /events{qs} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
                f = sock.makefile("rb")
                status = f.readline()
                if b" 200 " not in status:
                    sse_errors[i] += 1
                    time.sleep(1)
                    continue
                event = None
                for line in f:
                    if line.startswith(b"event:"):
                        event = line[6:].strip()
                    elif line.startswith(b"id:"):
                        last = int(line[3:].strip())
                        if event is None:
                            received[i].add(last)
                    elif line == b"\n":
                        event = None
                if not stop.is_set():
                    sse_errors[i] += 1  # the server ended the stream
            except OSError:
                if not stop.is_set():
                    sse_errors[i] += 1
                    time.sleep(0.5)

    threads = [threading.Thread(target=sse, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # let every stream connect
    q_out.put("streams-open")

    rnd = random.Random(1)
    auth = {"X-Storygraph-Token": token, "Content-Type": "application/json"}
    query = json.dumps({"cypher": "MATCH (c:Character) RETURN c.id AS id, c.name AS name"})
    plan = []
    for _ in range(int(rps * seconds)):
        r = rnd.random()
        if r < 0.10:
            plan.append(("GET", "/api/graph", None, {}))
        elif r < 0.40:
            plan.append(("GET", f"/api/scenes/{rnd.choice(scenes)}", None, {}))
        elif r < 0.60:
            plan.append(("GET", f"/api/scenes/{rnd.choice(scenes)}/element", None, {}))
        elif r < 0.75:
            plan.append(("GET", f"/api/characters/{rnd.choice(characters)}", None, {}))
        elif r < 0.85:
            plan.append(("GET", "/api/info", None, {}))
        else:
            plan.append(("POST", "/api/query", query, auth))
    lat: list[float] = []
    by_path: dict = {}
    api_errors = [0]
    lock = threading.Lock()

    def one(scheduled, method, path, body, headers):
        try:
            status = _request(host, port, method, path, body, headers)
            ok = status == 200
        except OSError:
            ok = False
        ms = (time.perf_counter() - scheduled) * 1000  # from when it was due: queueing counts
        key = path.split("/")[2] if path.count("/") >= 2 else path
        if path.startswith("/api/scenes/") and path.endswith("/element"):
            key = "element"
        with lock:
            lat.append(ms)
            by_path.setdefault(key, []).append(ms)
            if not ok:
                api_errors[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for k, (method, path, body, headers) in enumerate(plan):
            due = start + k / rps
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, due, method, path, body, headers)
    expected = q_in.get(timeout=120)  # the seqs the server wrote meanwhile
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(not set(expected) <= r for r in received):
        time.sleep(0.1)
    stop.set()
    for s in list(socks):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    missing = sum(len(set(expected) - r) for r in received)
    lat.sort()
    q_out.put({
        "requests": len(lat), "api_errors": api_errors[0], "stream_errors": sum(sse_errors), "missing_events": missing,
        "events_expected_per_client": len(expected),
        "p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
        "max_ms": round(lat[-1], 1) if lat else None,
        "p99_ms_by_route": {k: round(sorted(v)[min(len(v) - 1, int(len(v) * 0.99))], 1) for k, v in by_path.items()},
    })


# -- main -----------------------------------------------------------------------------------------


def load_test(viewer, rs, store, story, used: int, args) -> dict:
    """--clients SSE streams and --rps API requests/s for --seconds, with a commit every --commit-every seconds
    (scenes from index ``used`` on) so the streams carry events."""
    scene_ids = [s.id for s in story.scenes]
    time.sleep(1.0)
    baseline_streams = viewer.hub.clients  # streams of closed pages linger until their next write
    ctx = mp.get_context("spawn")
    q_out, q_in = ctx.Queue(), ctx.Queue()
    host, port = rs.server.host, rs.server.port
    proc = ctx.Process(target=load_clients, args=(host, port, rs.token, args.clients, args.rps, args.seconds,
                                                  scene_ids, [c.id for c in story.characters], q_out, q_in))
    proc.start()
    assert q_out.get(timeout=60) == "streams-open"
    connected = viewer.hub.clients - baseline_streams
    seqs = []
    t_end = time.monotonic() + args.seconds
    i = used
    while time.monotonic() < t_end:
        seqs.append(commit(store, scene_ids[i % len(scene_ids)], take=1 + i // len(scene_ids)))
        i += 1
        time.sleep(args.commit_every)
    q_in.put(seqs)
    res = q_out.get(timeout=180)
    proc.join(timeout=30)
    return {
        "stream_clients_connected": connected,
        "load_seconds": args.seconds, "load_clients": args.clients, "load_rps": args.rps,
        "errors": res["api_errors"] + res["stream_errors"] + res["missing_events"],
        "p99_ms": res["p99_ms"], "p50_ms": res["p50_ms"], "max_ms": res["max_ms"],
        "requests": res["requests"], "api_errors": res["api_errors"], "stream_errors": res["stream_errors"],
        "missing_events": res["missing_events"], "events_per_client": res["events_expected_per_client"],
        "p99_ms_by_route": res["p99_ms_by_route"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--done", type=int, default=300, help="scenes given a committed take before the run")
    ap.add_argument("--renders", type=int, default=3)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--commit-every", type=float, default=2.0, help="seconds between commits during the load test")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-load", action="store_true", help="leave out the streams + requests load test")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from storygraph.webviz import create_app, start, viewer_of

    tmp = Path(tempfile.mkdtemp(prefix="storygraph-bench-viewer-"))
    out: dict = {"nodes": args.nodes, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    try:
        store, story, load_s = build_store(tmp / "story", args.nodes, args.done)
        out["load_story_s"] = round(load_s, 2)
        scene_ids = [s.id for s in story.scenes]
        app = create_app(store, story_dir=tmp / "story", warm=False)
        viewer = viewer_of(app)
        rs = start(app)
        url = f"{rs.url}?token={rs.token}"
        t = time.perf_counter()
        graph, body = viewer.graph()
        out["graph_json_build_s"] = round(time.perf_counter() - t, 3)
        out["graph_json_mb"] = round(len(body) / 1e6, 2)
        out["graph_big_mode"] = graph["big"]
        out["graph_layout"] = graph["layout"]

        if not args.skip_browser:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--disable-quic"])
                page_load(browser, url)  # browser warm-up (JS parse caches), not counted
                viewer.changed()
                out["first_render_cold_s"] = round(page_load(browser, url)[0], 3)
                viewer.graph()
                runs = [page_load(browser, url) for _ in range(args.renders)]
                out["first_render_s"] = round(statistics.median(r[0] for r in runs), 3)
                out["all_elements_s"] = round(statistics.median(r[1] for r in runs), 3)
                out["cytoscape_all_s"] = round(statistics.median(r[2] for r in runs), 3)
                planned = [s for s in scene_ids[args.done:] if store.scene(s).status == "planned"]
                lat = update_latency(browser, url, store, planned, args.updates)
                out["update_latency_ms_p50"] = round(statistics.median(lat), 1)
                out["update_latency_ms_max"] = round(max(lat), 1)
                browser.close()
            used = args.done + args.updates
        else:
            used = args.done

        if not args.skip_load:
            out.update(load_test(viewer, rs, store, story, used, args))
        rs.stop()
        store.close()
        out["cpu_count"] = os.cpu_count()
        out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
