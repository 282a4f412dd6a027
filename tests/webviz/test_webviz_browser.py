"""The viewer in a real browser (Debian's Chromium via Playwright) against a live threaded server.

Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import pytest

from support import EXAMPLE, Served, click_node, commit_take, example_store, graph_expectations, open_page, shot, wait_js
from storygraph.domain import Character, ConditionRecord, SceneSpec, Transition
from storygraph.graphdb import TransitionRecord
from storygraph.timeline import child_placement, transition_decay
from storygraph.webviz import create_app, start, viewer_of
from storygraph.webviz.events import EventHub

pytestmark = pytest.mark.browser


@pytest.fixture
def live(tmp_path):
    store, story = example_store(tmp_path / "story")
    app = create_app(store, story_dir=tmp_path / "story", keepalive_s=5)
    rs = start(app)
    yield Served(store, story, app, rs)
    rs.stop()
    store.close()


def open_viewer(page, live, token: bool = True):
    return open_page(page, live, "storygraph.firstRenderAt", token)


def test_example_story_renders_with_the_right_counts(page, live):
    errors = open_viewer(page, live)
    want = graph_expectations(live.story)
    got = page.evaluate("""(() => { const cy = storygraph.cy; return {
        scenes: cy.nodes('.scene').length, characters: cy.nodes('.character').length,
        environments: cy.nodes('.environment').length, next: cy.edges('.next').length,
        appears: cy.edges('.appears').length, setin: cy.edges('.setin').length }; })()""")
    assert got == want
    assert page.locator("#counts").inner_text().startswith(f"{want['scenes']} scenes")
    assert page.locator("#story-title").inner_text() == live.story.title
    assert "token=" not in page.url  # the token left the address bar
    # NEXT edges are drawn by kind: a time skip is dotted, a continuous one solid
    styles = page.evaluate("""(() => { const cy = storygraph.cy; return {
        skip: cy.$('edge.next.time_skip')[0].style('line-style'), cont: cy.$('edge.next.continuous')[0].style('line-style') }; })()""")
    assert styles == {"skip": "dotted", "cont": "solid"}
    shot(page, "example-graph")
    click_node(page, "s07-dawn")
    wait_js(page, "document.querySelector('#tab-scene h2') && document.querySelector('#tab-scene h2').textContent.includes('Dawn at sea')")
    click_node(page, "mara")
    wait_js(page, "document.querySelector('#tab-character svg.plot')")
    page.select_option("#filter", "tomas")
    dimmed = page.evaluate("storygraph.cy.nodes('.scene.dim').length")
    assert dimmed == sum(1 for s in live.story.scenes if "tomas" not in s.characters)
    shot(page, "example-character-filter")
    assert not errors, errors


def test_a_commit_appears_without_reload(page, live):
    open_viewer(page, live)
    page.evaluate("window.__sameDocument = 'still here'")
    seq = commit_take(live.store, "s01-arrival", video=True)
    wait_js(page, "storygraph.cy.getElementById('s01-arrival').data('status') === 'done'", timeout=5)
    assert page.evaluate("storygraph.cy.getElementById('s01-arrival').hasClass('thumb-on')")
    assert page.evaluate("storygraph.cy.getElementById('s01-arrival').data('thumb')").startswith("/media/")
    assert page.evaluate("storygraph.lastSeq") >= seq
    # a scene the page has never seen: added, joined and generated elsewhere, it shows up too
    parent = live.store.scene("s09-market")
    t = Transition("s09-market", "s10-coda", "cut", 3.0)
    live.store.upsert_scene(SceneSpec("s10-coda", "Tomas closes the market", characters=("tomas",), environment="market"),
                            child_placement(parent.placement, "s10-coda", 3.0, continues_branch=True))
    live.store.upsert_transition(TransitionRecord(t.from_id, t.to_id, t.kind, 3.0, transition_decay(3.0, 10.0)))
    commit_take(live.store, "s10-coda")
    n = len(live.story.scenes) + 1
    wait_js(page, f"storygraph.cy.nodes('.scene').length === {n}", timeout=5)
    wait_js(page, "storygraph.cy.getElementById('s10-coda').data('status') === 'done'", timeout=5)
    assert page.evaluate("storygraph.cy.getElementById('next:s09-market>s10-coda').length") == 1
    assert page.evaluate("window.__sameDocument") == "still here"
    # story text is shown as text, never run as markup
    hostile = '<img src=x onerror="window.__xss=1">'
    live.store.upsert_character(Character("hacker", hostile, "<script>window.__xss=2</script>"))
    live.store.append_event("character.updated", "hacker")
    wait_js(page, "storygraph.cy.getElementById('hacker').length === 1", timeout=5)
    click_node(page, "hacker")
    wait_js(page, "document.querySelector('#tab-character h2')")
    assert page.locator("#tab-character h2").inner_text() == hostile
    assert page.evaluate("window.__xss === undefined")
    click_node(page, "s01-arrival")
    wait_js(page, "document.querySelector('#scene-video')")
    wait_js(page, "document.querySelector('#scene-video').readyState >= 1")  # the browser read the mp4
    shot(page, "live-commit")
    # the memory a scene was conditioned on: drawn for the selected scene, listed in its panel
    mara = live.store.appearances(character_id="mara", with_vectors=False)[0]
    commit_take(live.store, "s04-meeting", conditioned_on=[
        ConditionRecord("keyframe", "Appearance", mara.id, 8, 0.6, 0.74, "nearest prior appearance of mara on this timeline"),
        ConditionRecord("extension", "Scene", "s01-arrival", 0, 1.0, None, "reference frames")])
    wait_js(page, "storygraph.cy.getElementById('s04-meeting').data('status') === 'done'", timeout=5)
    click_node(page, "s04-meeting")
    wait_js(page, "document.querySelectorAll('#tab-scene .cond-item').length === 2")
    edges = page.evaluate("storygraph.cy.edges('.conditioned').map(e => [e.target().id(), e.data('label')]).sort()")
    assert edges == [["s01-arrival", "extension"], ["s01-arrival", "keyframe · mara · 0.74"]]
    assert "nearest prior appearance of mara" in page.locator("#tab-scene").inner_text()
    shot(page, "conditioning")


def test_the_graph_reads_as_timelines(page, live):
    """Lanes labelled by branch, cast and place edges hidden until asked for, time skips as visible as any other
    transition (with their gap), and search."""
    from storygraph.timeline import place_scenes

    open_viewer(page, live)
    placements = place_scenes([s.id for s in live.story.scenes], list(live.story.transitions))
    branches = sorted({p.branch for p in placements.values()})
    lanes = page.evaluate("storygraph.cy.nodes('.lane').map(n => [n.data('branch'), n.data('label')])")
    assert sorted(b for b, _ in lanes) == branches and len(branches) == 2
    main = next(lbl for b, lbl in lanes if b == live.story.scenes[0].id)
    assert main.startswith("main")
    visible = "storygraph.cy.edges('.appears').filter(e => e.visible()).length"
    assert page.evaluate("storygraph.cy.edges('.appears').length") == sum(len(s.characters) for s in live.story.scenes)
    assert page.evaluate(visible) == 0
    page.check("#show-appears")
    wait_js(page, f"{visible} === storygraph.cy.edges('.appears').length")
    page.uncheck("#show-appears")
    wait_js(page, f"{visible} === 0")
    skips = [t for t in live.story.transitions if t.kind == "time_skip"]
    got = page.evaluate("storygraph.cy.edges('.next.time_skip').map(e => [e.id(), Number(e.style('opacity')),"
                        " e.style('label'), e.visible()])")
    assert len(got) == len(skips)
    for t in skips:
        eid, opacity, label, shown = next(g for g in got if g[0] == f"next:{t.from_id}>{t.to_id}")
        assert opacity >= 0.9 and shown and label == f"+{t.gap:g}"
    page.fill("#search", "market")
    want = sorted({s.id for s in live.story.scenes if "market" in (s.id + s.title + s.action).lower()}
                  | {e.id for e in live.story.environments if "market" in (e.id + e.name + e.description).lower()})
    wait_js(page, f"storygraph.found.length === {len(want)}")
    assert sorted(page.evaluate("storygraph.found")) == want
    page.press("#search", "Enter")
    wait_js(page, f"storygraph.selected && {json.dumps(want)}.includes(storygraph.selected.id)")
    shot(page, "graph-lanes-search")


def test_console_draws_nodes_and_relationships_and_keeps_history(page, live):
    open_viewer(page, live)
    page.click("#tabs button[data-tab=console]")
    page.fill("#cypher", "MATCH (a:Scene)-[n:NEXT]->(b:Scene) WHERE n.kind = 'time_skip' RETURN a, n, b")
    page.click("#run-query")
    skips = [t for t in live.story.transitions if t.kind == "time_skip"]
    wait_js(page, "storygraph.lastQuery && !!storygraph.qcy")
    assert page.evaluate("storygraph.lastQuery.graphEdges") == len(skips)
    ends = {x for t in skips for x in (t.from_id, t.to_id)}
    assert page.evaluate("storygraph.qcy.nodes().length") == len(ends)
    drawn = page.evaluate("storygraph.qcy.edges().map(e => e.source().data('ref') + '>' + e.target().data('ref')).sort()")
    assert drawn == sorted(f"{t.from_id}>{t.to_id}" for t in skips)
    page.click("#query-views button[data-view=graph]")
    wait_js(page, "!document.querySelector('#query-graph').hidden")
    shot(page, "console-graph")
    # history: the query is there after a reload; a saved query keeps its name
    page.once("dialog", lambda d: d.accept("time skips"))
    page.click("#save-query")
    page.reload()
    wait_js(page, "window.storygraph && storygraph.ready", timeout=60)
    history = page.evaluate("[...document.querySelectorAll('#query-history option')].map(o => o.textContent)")
    assert any("time_skip" in h for h in history)
    saved = page.evaluate("[...document.querySelectorAll('#query-saved option')].map(o => o.textContent)")
    assert "time skips" in saved


def test_console_returns_rows_and_refuses_a_write(page, live):
    open_viewer(page, live)
    page.click("#tabs button[data-tab=console]")
    page.fill("#cypher", "MATCH (s:Scene) WHERE s.environment = 'pier' RETURN s.id AS scene ORDER BY s.clock")
    page.click("#run-query")
    wait_js(page, "document.querySelectorAll('#query-table tr').length > 1")
    pier = [s.id for s in live.story.scenes if s.environment == "pier"]
    cells = page.locator("#query-table td").all_inner_texts()
    assert sorted(cells) == sorted(pier)
    hits = page.evaluate("storygraph.cy.nodes('.hit').map(n => n.id()).sort()")
    assert hits == sorted(pier)
    shot(page, "console-read")
    page.fill("#cypher", "MATCH (s:Scene) DETACH DELETE s")
    page.click("#run-query")
    wait_js(page, "!document.querySelector('#query-error').hidden")
    assert "read-only" in page.locator("#query-error").inner_text()
    assert len(live.store.scenes()) == len(live.story.scenes)
    shot(page, "console-write-refused")


def test_the_page_reconnects_and_catches_up(page, live):
    """The event route fails (503) for a while: the page recreates its EventSource with backoff, passes its
    last id itself, and gets the event it missed."""
    open_viewer(page, live)
    viewer = viewer_of(live.app)
    viewer.hub.close()  # ends the open stream; reconnections now get 503 and close for good
    wait_js(page, "storygraph.live === 'offline'", timeout=10)
    commit_take(live.store, "s03-keeper")
    hub = EventHub(live.store, poll_s=viewer.config.poll_s)
    hub.start()
    viewer.hub = hub
    wait_js(page, "storygraph.cy.getElementById('s03-keeper').data('status') === 'done'", timeout=15)
    assert page.evaluate("storygraph.connects") >= 2


def _studio_or_skip(story_dir):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from storygraph.engine.demo import demo_story, prepare
        from storygraph.engine.engine import StoryEngine
        from storygraph.storyfile import load_story

        prepare(story_dir)
        eng = StoryEngine.open(story_dir)
    except Exception as e:  # pragma: no cover - depends on the engine being installed whole
        pytest.skip(f"StoryEngine with tiny models unavailable: {type(e).__name__}: {e}")
    eng.load(demo_story(load_story(EXAMPLE)))
    return eng


@pytest.mark.slow
def test_edit_a_scene_and_generate_it_from_the_page(page, tmp_path):
    eng = _studio_or_skip(tmp_path / "studio")
    app = create_app(eng.store, eng, story_dir=eng.dir, keepalive_s=5)
    rs = start(app)
    try:
        live = Served(eng.store, None, app, rs, eng)
        open_viewer(page, live)
        assert page.locator("#mode").inner_text().lower() == "studio"
        click_node(page, "s01-arrival")
        wait_js(page, "document.querySelector('#edit-scene')")
        page.click("#edit-scene")
        page.fill("#scene-form textarea[name=action]", "Mara runs along the pier in the rain")
        page.select_option("#scene-form select[name=memory]", "keyframe")
        page.click("#scene-form button[type=submit]")
        wait_js(page, "document.querySelector('#scene-form .form-status').classList.contains('ok')")
        assert eng.store.scene("s01-arrival").spec.action == "Mara runs along the pier in the rain"
        assert eng.store.scene("s01-arrival").spec.memory == "keyframe"
        page.click("#tabs button[data-tab=scene]")
        # the panel redraws when the edit's event arrives: click the button of the redrawn panel
        wait_js(page, "document.querySelector('#tab-scene').textContent.includes('runs along the pier')")
        page.click("#gen-1")
        # the job's id, then its state, as the page holds them (never a status text that may already be gone)
        job = wait_js(page, "storygraph.lastJob")
        assert page.evaluate(f"storygraph.jobs.has({job})")
        shot(page, "generate-queued")
        wait_js(page, f"['done', 'failed'].includes((storygraph.jobs.get({job}) || {{}}).state)", timeout=240)
        assert page.evaluate(f"storygraph.jobs.get({job}).state") == "done"
        wait_js(page, "storygraph.cy.getElementById('s01-arrival').data('status') === 'done'", timeout=30)
        rec = eng.store.scene("s01-arrival")
        assert rec.status == "done" and rec.takes >= 1 and "runs along the pier" in (rec.prompt or "")
        wait_js(page, "document.querySelector('#scene-video') && document.querySelector('#scene-video').readyState >= 1",
                timeout=30)
        kinds = page.evaluate("storygraph.events.map(e => e.kind)")
        assert "job.started" in kinds and "take.committed" in kinds
        shot(page, "generated")
    finally:
        rs.stop()
        viewer_of(app).worker.close(wait=30)
        eng.close()
