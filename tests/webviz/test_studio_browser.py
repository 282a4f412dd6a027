"""The studio as a daily tool, in a real browser (Debian's Chromium via Playwright) against a live server whose
engine generates with the tiny random-weight models: the queue (run all, cancel between denoising steps),
a timeline played end to end, takes side by side, a reference image uploaded and then conditioning the next
generation, deleting a scene, and an edit that keeps what it did not change.

Every wait is for a state — a job's id and state, an Event in the page's log, a graph element's data, a media
element's readyState — never for a text that comes and goes. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from support import Served, click_node, harbor_story, new_engine, open_page, shot, wait_js
from storygraph.webviz import create_app, start, viewer_of

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMELINE = ("s01-arrival", "s02-package", "s03-keeper", "s04-meeting", "s06-escape")


@pytest.fixture
def studio(tmp_path, tiny_config, tiny_runtime):
    eng = new_engine(tmp_path / "studio", tiny_config, tiny_runtime, harbor_story())
    app = create_app(eng.store, eng, story_dir=eng.dir, keepalive_s=5)
    rs = start(app)
    try:
        yield Served(eng.store, None, app, rs, eng)
    finally:
        rs.stop()
        viewer_of(app).worker.close(wait=60)
        eng.close()


def open_studio(page, studio):
    return open_page(page, studio, "storygraph.editable")


def select_scene(page, scene_id: str) -> None:
    click_node(page, scene_id)
    wait_js(page, f"storygraph.selected && storygraph.selected.id === {json.dumps(scene_id)} && "
                  "document.querySelector('#tab-scene h2')")


def job_state(page, job_id: int):
    return page.evaluate(f"(storygraph.jobs.get({job_id}) || {{}}).state")


def wait_job(page, job_id: int, states, timeout: float = 120):
    want = json.dumps(list(states))
    wait_js(page, f"{want}.includes((storygraph.jobs.get({job_id}) || {{}}).state)", timeout=timeout)
    return job_state(page, job_id)


def newest_job_id(page) -> int:
    """The job the page's last click queued (its id comes back from the request)."""
    return wait_js(page, "storygraph.lastJob")


def event_seen(page, kind: str, ref_id: str = None, since: int = 0) -> str:
    ref = "" if ref_id is None else f" && e.ref_id === {json.dumps(ref_id)}"
    return f"storygraph.events.some(e => e.seq > {since} && e.kind === {json.dumps(kind)}{ref})"


def media_dirs(story_dir: Path, scene_id: str) -> list:
    return sorted(p.name for p in (story_dir / "media" / scene_id).glob("*")) \
        if (story_dir / "media" / scene_id).exists() else []


# -- the queue ----------------------------------------------------------------------------------------------------


def test_run_all_then_cancel_between_denoising_steps(page, studio):
    """Run all from the page, cancel while the second scene is being denoised: the scene is planned again with
    nothing of it written (no take, no appearance, no media), the first scene stays done, nothing after it ran; the
    queue's history says cancelled with its duration. Run all again: the story completes."""
    eng, story_dir = studio.engine, studio.engine.dir
    gen = eng.generator
    steps_seen: dict = {}
    current = {"scene": None}
    eng.on_event(lambda sid, stage, info: current.__setitem__("scene", sid))
    worker = viewer_of(studio.app).worker
    released = threading.Event()

    def hold_second_scene(step: int) -> None:
        # a real denoising step of s02 has run; hold the next one until the page's cancel reached the worker
        sid = current["scene"]
        steps_seen.setdefault(sid, []).append(step)
        if sid == "s02-package" and step == 0:
            deadline = time.monotonic() + 120
            while not released.is_set() and time.monotonic() < deadline:
                if any(j["state"] == "cancelling" for j in worker.jobs()):
                    return
                time.sleep(0.02)

    before = gen.on_step
    gen.on_step = hold_second_scene
    try:
        errors = open_studio(page, studio)
        page.click("#run-all")
        job = newest_job_id(page)
        wait_js(page, f"(storygraph.jobs.get({job}).progress || {{}}).scene === 's02-package' && "
                      f"storygraph.jobs.get({job}).progress.stage === 'generate'", timeout=120)
        assert not page.locator("#progress-box").is_hidden()
        shot(page, "queue-running")
        page.click("#cancel-running")
        assert wait_job(page, job, ["cancelled", "failed", "done"]) == "cancelled"
        wait_js(page, "storygraph.cy.getElementById('s02-package').data('status') === 'planned'")
        wait_js(page, f"document.querySelector('#jobs [data-job=\"{job}\"]')")
        page.click("#tabs button[data-tab=activity]")
        shot(page, "queue-cancelled")
    finally:
        released.set()
        gen.on_step = before

    assert steps_seen.get("s02-package") == [0]  # cancelled between its first and second denoising step
    store = studio.store
    s01, s02 = store.scene("s01-arrival"), store.scene("s02-package")
    assert s01.status == "done" and (story_dir / s01.video_path).is_file()  # media paths: relative to the folder
    assert s02.status == "planned" and s02.takes == 0 and s02.video_path is None
    assert store.takes("s02-package") == [] and store.appearances(scene_id="s02-package", accepted_only=False) == []
    assert media_dirs(story_dir, "s02-package") == []
    for sid in TIMELINE[2:]:
        assert store.scene(sid).status == "planned" and media_dirs(story_dir, sid) == []
    final = worker.job(job)
    assert final["state"] == "cancelled" and final["done"] == ["s01-arrival"] and final["duration_s"] > 0
    history = page.locator(f"#jobs [data-job='{job}']").inner_text()
    assert "cancelled" in history and "1 scene made" in history

    # the same button again finishes the story from where it stopped
    page.click("#run-all")
    again = wait_js(page, f"storygraph.lastJob > {job} && storygraph.lastJob")
    assert wait_job(page, again, ["done", "failed", "cancelled"], timeout=240) == "done"
    assert [s.status for s in store.scenes()] == ["done"] * len(TIMELINE)
    assert not errors, errors


def test_run_one_timeline_from_the_page(page, tmp_path, tiny_config, tiny_runtime):
    """Run a branch: the timeline's own scenes and the scenes it follows are made, a sibling branch is not."""
    from support import harbor_story as cut_story

    story = cut_story(("s01-arrival", "s02-package", "s03-keeper", "s04-meeting"),
                      (("s01-arrival", "s02-package", "continuous", None), ("s01-arrival", "s03-keeper", "cut", None),
                       ("s03-keeper", "s04-meeting", "cut", None)), story_id="branchy")
    eng = new_engine(tmp_path / "branchy", tiny_config, tiny_runtime, story)
    app = create_app(eng.store, eng, story_dir=eng.dir, keepalive_s=5)
    rs = start(app)
    try:
        open_studio(page, Served(eng.store, None, app, rs, eng))
        lanes = page.evaluate("storygraph.cy.nodes('.lane').map(n => n.data('branch')).sort()")
        assert lanes == ["s01-arrival", "s03-keeper"]
        page.select_option("#run-branch", "s03-keeper")
        page.click("#run-branch-btn")
        job = newest_job_id(page)
        assert wait_job(page, job, ["done", "failed", "cancelled"], timeout=180) == "done"
        status = {s.id: s.status for s in eng.store.scenes()}
        assert status == {"s01-arrival": "done", "s02-package": "planned", "s03-keeper": "done", "s04-meeting": "done"}
        assert viewer_of(app).worker.job(job)["done"] == ["s01-arrival", "s03-keeper", "s04-meeting"]
    finally:
        rs.stop()
        viewer_of(app).worker.close(wait=60)
        eng.close()


# -- playback and takes ----------------------------------------------------------------------------------------


def test_a_timeline_plays_end_to_end_as_one_file(page, studio):
    """The page's player plays the stitched film of the main timeline: its duration is the sum of the scenes',
    and its frames are the scenes' frames in order."""
    from storygraph.engine.media import read_video

    studio.engine.run()
    open_studio(page, studio)
    page.click("#tabs button[data-tab=timeline]")
    page.select_option("#timeline-select", TIMELINE[0])
    page.click("#timeline-play")
    wait_js(page, "(() => { const v = document.querySelector('#timeline-video');"
                  " return !v.hidden && v.readyState >= 2 && v.duration > 0; })()", timeout=60)
    specs = [studio.store.scene(s).spec for s in TIMELINE]
    expected = sum(s.frames / s.fps for s in specs)  # from the story itself, not from the files
    duration = page.evaluate("document.querySelector('#timeline-video').duration")
    assert duration == pytest.approx(expected, abs=0.06)
    wait_js(page, "document.querySelector('#timeline-video').currentTime > 0.2", timeout=30)  # it plays
    assert page.evaluate("document.querySelectorAll('#timeline-scenes li').length") == len(TIMELINE)
    shot(page, "timeline-playback")

    src = page.evaluate("document.querySelector('#timeline-video').getAttribute('src')")
    cut_file = studio.engine.dir / "media" / src.removeprefix("/media/")
    frames, fps = read_video(cut_file)
    assert len(frames) == sum(s.frames for s in specs) and fps == pytest.approx(specs[0].fps)
    start = 0
    for sid, spec in zip(TIMELINE, specs):  # each scene's first frame where the player says it starts
        folder = studio.engine.dir  # media paths are relative to the story folder
        own, _ = read_video(folder / studio.store.scene(sid).video_path)
        err = np.mean((frames[start].astype(float) - own[0].astype(float)) ** 2)
        others = [np.mean((frames[start].astype(float) - read_video(folder / studio.store.scene(o).video_path)[0][0]
                           .astype(float)) ** 2) for o in TIMELINE if o != sid]
        assert err < min(others), (sid, err, others)
        start += spec.frames


def test_takes_side_by_side_play_in_step_and_one_is_chosen(page, studio):
    eng = studio.engine
    eng.generate("s01-arrival", takes=3)
    chosen = eng.store.scene("s01-arrival").chosen_take
    other = next(t.take for t in eng.store.takes("s01-arrival") if t.take != chosen)
    open_studio(page, studio)
    select_scene(page, "s01-arrival")
    page.click("#compare-takes")
    wait_js(page, "document.querySelectorAll('#compare-grid video').length === 3 && "
                  "[...document.querySelectorAll('#compare-grid video')].every(v => v.readyState >= 2)", timeout=30)
    cells = page.locator("#compare-grid .compare-cell").all_inner_texts()
    assert all("identity" in c for c in cells)  # every take shows its scores
    page.click("#compare-play")
    wait_js(page, "[...document.querySelectorAll('#compare-grid video')].every(v => !v.paused && v.currentTime > 0.1)",
            timeout=20)
    times = page.evaluate("[...document.querySelectorAll('#compare-grid video')].map(v => v.currentTime)")
    assert max(times) - min(times) < 0.3, times
    shot(page, "takes-side-by-side")
    page.click("#compare-pause")
    since = page.evaluate("storygraph.lastSeq")
    page.click(f"#compare-grid .compare-cell[data-take='{other}'] button.choose")
    wait_js(page, event_seen(page, "take.chosen", "s01-arrival", since))
    assert eng.store.scene("s01-arrival").chosen_take == other
    wait_js(page, "document.querySelector('#compare').hidden")  # closed once the page has the answer


# -- references ------------------------------------------------------------------------------------------------


def _image(path: Path, color) -> Path:
    from PIL import Image

    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[:] = color
    img[8:40, 16:48] = (255 - np.array(color)).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def test_an_uploaded_reference_is_shown_and_conditions_the_next_generation(page, studio, tmp_path):
    from storygraph.engine.media import load_image

    upload = _image(tmp_path / "mara-costume.png", (200, 40, 30))
    open_studio(page, studio)
    # a character's reference: uploaded in the character panel, shown there
    click_node(page, "mara")
    wait_js(page, "document.querySelector('#tab-character .ref-form')")
    page.set_input_files("#tab-character .ref-form input[type=file]", str(upload))
    page.click("#tab-character .ref-form button[type=submit]")
    wait_js(page, "(() => { const i = document.querySelector('#character-reference');"
                  " return i && i.complete && i.naturalWidth > 0; })()")
    assert studio.store.characters()[[c.id for c in studio.store.characters()].index("mara")].reference_path
    # a scene's reference: added in the scene panel, shown there, then used by the next generation
    select_scene(page, "s01-arrival")
    page.select_option("#tab-scene .ref-form select.ref-kind", "costume")
    page.select_option("#tab-scene .ref-form select.ref-character", "mara")
    page.set_input_files("#tab-scene .ref-form input[type=file]", str(upload))
    page.click("#tab-scene .ref-form button[type=submit]")
    wait_js(page, "(() => { const i = document.querySelector('#scene-refs figure[data-kind=costume] img');"
                  " return i && i.complete && i.naturalWidth > 0; })()")
    shot(page, "reference-uploaded")
    page.click("#gen-1")
    job = newest_job_id(page)
    assert wait_job(page, job, ["done", "failed", "cancelled"], timeout=120) == "done"
    wait_js(page, "[...document.querySelectorAll('#tab-scene .cond-item b')].some(b => b.textContent === 'reference')",
            timeout=30)
    shot(page, "reference-conditioned")
    refs = [c for c in studio.store.conditioned_on("s01-arrival") if c.target_kind == "Reference"]
    assert len(refs) == 1 and refs[0].role == "reference"
    kept = Path(refs[0].target_id)
    assert kept.is_file() and kept.parent == studio.engine.dir / "media" / "references"
    assert np.array_equal(load_image(kept), load_image(upload))  # the pixels sent are the pixels used


def test_a_file_that_is_not_an_image_is_refused_with_nothing_attached(page, studio, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all", encoding="utf-8")
    open_studio(page, studio)
    select_scene(page, "s01-arrival")
    page.set_input_files("#tab-scene .ref-form input[type=file]", str(bad))
    page.click("#tab-scene .ref-form button[type=submit]")
    try:
        wait_js(page, "document.querySelector('#tab-scene .ref-status').classList.contains('error')")
    except Exception:
        print(page.evaluate("JSON.stringify(storygraph.events.map(e => e.kind + ' ' + e.ref_id))"))
        print(page.evaluate("document.querySelector('#tab-scene').innerHTML.slice(0, 3000)"))
        raise
    assert studio.store.scene("s01-arrival").spec.references == ()
    assert not (studio.engine.dir / "media" / "references").exists() or \
        not any((studio.engine.dir / "media" / "references").iterdir())


# -- deleting --------------------------------------------------------------------------------------------------


def test_deleting_a_scene_confirms_and_refuses_to_orphan_a_generated_child(page, studio):
    eng, story_dir = studio.engine, studio.engine.dir
    eng.run(until="s02-package")  # s01 and s02 generated, the rest planned
    open_studio(page, studio)
    # s01 has a generated child (s02 extends it): refused, nothing gone
    select_scene(page, "s01-arrival")
    page.click("#delete-scene")
    wait_js(page, "!document.querySelector('#confirm').hidden")
    page.click("#confirm-yes")
    wait_js(page, "document.querySelector('#gen-status').classList.contains('error')")
    assert "s02-package" in page.locator("#gen-status").inner_text()
    assert eng.store.scene("s01-arrival") is not None and media_dirs(story_dir, "s01-arrival") == ["take-0"]
    # cancelling the dialog deletes nothing
    select_scene(page, "s02-package")
    page.click("#delete-scene")
    wait_js(page, "!document.querySelector('#confirm').hidden")
    page.click("#confirm-no")
    assert eng.store.scene("s02-package") is not None
    # s02: its child s03 was never generated; deleting it makes s03 start a timeline of its own
    page.click("#delete-scene")
    wait_js(page, "!document.querySelector('#confirm').hidden")
    shot(page, "delete-confirm")
    since = page.evaluate("storygraph.lastSeq")
    page.click("#confirm-yes")
    wait_js(page, event_seen(page, "scene.deleted", "s02-package", since))
    wait_js(page, "storygraph.cy.getElementById('s02-package').empty() && "
                  "storygraph.cy.nodes('.lane').some(n => n.data('branch') === 's03-keeper')")
    shot(page, "scene-deleted")
    assert eng.store.scene("s02-package") is None and eng.store.takes("s02-package") == []
    assert media_dirs(story_dir, "s02-package") == []
    s03 = eng.store.scene("s03-keeper")
    assert s03.placement.parent_id is None and s03.placement.branch == "s03-keeper"
    assert {(t.from_id, t.to_id) for t in eng.store.transitions()} == {("s03-keeper", "s04-meeting"),
                                                                      ("s04-meeting", "s06-escape")}


# -- editing ---------------------------------------------------------------------------------------------------


def test_saving_an_edit_keeps_what_was_not_changed(page, studio):
    """Only the lighting changes: the cast keeps its order (the prompt names them in that order)."""
    before = studio.store.scene("s04-meeting").spec
    assert list(before.characters) == ["mara", "ines"]  # not the form's alphabetical order
    open_studio(page, studio)
    select_scene(page, "s04-meeting")
    page.click("#edit-scene")
    page.fill("#scene-form input[name=lighting]", "a single green flare")
    page.click("#scene-form button[type=submit]")
    wait_js(page, "document.querySelector('#scene-form .form-status').classList.contains('ok')")
    assert page.locator("#scene-form .form-status").inner_text() == "saved s04-meeting (lighting)"
    after = studio.store.scene("s04-meeting").spec
    assert after.lighting == "a single green flare"
    assert after.characters == before.characters and after.action == before.action


def test_a_generating_scene_shows_the_prompt_it_is_made_from(page, studio):
    eng = studio.engine
    eng.generate("s01-arrival")
    old_prompt = eng.store.scene("s01-arrival").prompt
    eng.update_scene("s01-arrival", lighting="one green flare")
    open_studio(page, studio)
    select_scene(page, "s01-arrival")
    shown = page.locator("#scene-prompt").inner_text()
    assert "green flare" in shown.lower() and shown != old_prompt
