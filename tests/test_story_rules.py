"""One set of story rules for every way a story changes: the same bad values sent to the viewer's HTTP API
(PATCH/POST) and to ``StoryEngine`` are refused with the same message — a 400 naming the JSON pointer of the
offending value, a ``RuleError`` naming its field path — and the graph is left exactly as it was. Where a story
file can carry the same value, its error says the same words.
"""

from __future__ import annotations

import math

import pytest

from support import EXAMPLE
from storygraph.domain import Character, Environment, SceneSpec, Story, Transition
from storygraph.errors import InvalidInput
from storygraph.rules import MAX_TEXT, RuleError
from storygraph.storyfile import StoryFileError, load_story
from storygraph.webviz import create_app, viewer_of

HUGE = 1e308
MANY = [f"c{i}" for i in range(70)]

# (what, url, body) with the expected JSON pointer and a fragment of the message; the same body goes to the
# engine method the route calls.
PATCH = "/api/scenes/s01-arrival"
CASES = [
    # links to the rest of the story
    ("unknown character", PATCH, {"characters": ["ghost"]}, "/characters/0", "unknown character 'ghost'"),
    ("unknown environment", PATCH, {"environment": "nowhere"}, "/environment", "unknown environment 'nowhere'"),
    ("character twice", PATCH, {"characters": ["mara", "mara"]}, "/characters/1", "'mara' is listed twice"),
    ("too many characters", PATCH, {"characters": MANY}, "/characters", "70 characters, more than 64"),
    ("characters as text", PATCH, {"characters": "mara"}, "/characters", "got a string ('mara')"),
    ("unknown field", PATCH, {"nonsense": 1}, "/nonsense", "unknown key 'nonsense'"),
    # declared ranges
    ("frames not 8k+1", PATCH, {"frames": 10}, "/frames", "10 is not allowed"),
    ("frames huge", PATCH, {"frames": 1_000_000_001}, "/frames", "1000000001 is not allowed"),
    ("frames as a float", PATCH, {"frames": 121.0}, "/frames", "got a number (121.0)"),
    ("seed past 32 bits", PATCH, {"seed": 2 ** 64}, "/seed", "18446744073709551616 is not allowed"),
    ("fps zero", PATCH, {"fps": 0}, "/fps", "0 is out of range"),
    ("fps huge", PATCH, {"fps": HUGE}, "/fps", "1e+308 is out of range"),
    ("guidance negative", PATCH, {"guidance": -1}, "/guidance", "-1 is out of range"),
    ("width huge", PATCH, {"width": 8192}, "/width", "8192 is not allowed"),
    ("steps boolean", PATCH, {"steps": True}, "/steps", "got a boolean (true)"),
    # text
    ("action empty", PATCH, {"action": ""}, "/action", "must not be empty"),
    ("action null", PATCH, {"action": None}, "/action", "got null"),
    ("title a number", PATCH, {"title": 5}, "/title", "got an integer (5); put it in quotes"),
    ("lighting too long", PATCH, {"lighting": "x" * (MAX_TEXT + 1)}, "/lighting", "10001 characters, more than 10000"),
    # new scenes
    ("scene id clashes ignoring case", "/api/scenes", {"id": "MARA", "action": "a"}, "/id",
     "duplicate id 'MARA': already used by character 'mara' ('mara' differs only in case)"),
    ("gap huge", "/api/scenes", {"id": "s99", "action": "a", "parent_id": "s01-arrival", "gap": HUGE}, "/gap",
     "1e+308 is out of range"),
    ("gap negative", "/api/scenes", {"id": "s99", "action": "a", "parent_id": "s01-arrival", "gap": -1}, "/gap",
     "-1 is out of range"),
    ("unknown parent", "/api/scenes", {"id": "s99", "action": "a", "parent_id": "nowhere"}, "/parent_id",
     "unknown scene 'nowhere'"),
    ("id a path", "/api/scenes", {"id": "../x", "action": "a"}, "/id", "invalid id '../x'"),
    ("unknown kind", "/api/scenes", {"id": "s99", "action": "a", "kind": "jump"}, "/kind",
     "unknown transition kind 'jump'"),
    ("new scene, unknown character", "/api/scenes", {"id": "s99", "action": "a", "characters": ["ghost"]},
     "/characters/0", "unknown character 'ghost'"),
    # characters
    ("character id of a scene", "/api/characters", {"id": "s01-arrival", "name": "X", "description": "d"}, "/id",
     "duplicate id 's01-arrival': already used by scene 's01-arrival'"),
    ("character id clashes ignoring case", "/api/characters", {"id": "Mara", "name": "X", "description": "d"}, "/id",
     "differs only in case"),
    ("decay_tau zero", "/api/characters", {"id": "z", "name": "Z", "description": "d", "decay_tau": 0},
     "/decay_tau", "0 is out of range"),
    ("decay_tau huge", "/api/characters", {"id": "z", "name": "Z", "description": "d", "decay_tau": 1e30},
     "/decay_tau", "1e+30 is out of range"),
    ("name too long", "/api/characters", {"id": "z", "name": "N" * 300, "description": "d"}, "/name",
     "300 characters, more than 200"),
    ("environment id of a character", "/api/environments", {"id": "ines", "description": "d"}, "/id",
     "already used by character 'ines'"),
    # transitions
    ("transition to itself", "/api/transitions", {"from": "s02-package", "to": "s02-package", "kind": "cut"}, "",
     "a transition from scene 's02-package' to itself"),
    ("transition closing a cycle", "/api/transitions", {"from": "s09-market", "to": "s01-arrival", "kind": "cut"}, "",
     "transitions form a cycle: s01-arrival -> s02-package"),
    ("transition from nowhere", "/api/transitions", {"from": "ghost", "to": "s02-package", "kind": "cut"}, "/from",
     "unknown scene 'ghost'"),
    ("transition gap huge", "/api/transitions", {"from": "s01-arrival", "to": "s03-keeper", "kind": "cut", "gap": HUGE},
     "/gap", "1e+308 is out of range"),
    ("transition without kind", "/api/transitions", {"from": "s01-arrival", "to": "s03-keeper"}, "/kind",
     "missing required field 'kind'"),
]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from storygraph.engine.engine import StoryEngine

    eng = StoryEngine.open(tmp_path_factory.mktemp("rules") / "story")
    eng.load(EXAMPLE)
    app = create_app(eng.store, eng, story_dir=eng.dir, warm=False, keepalive_s=0.3, poll_s=0.02)
    app.testing = True
    viewer_of(app).start()
    yield eng, app
    viewer_of(app).close()
    viewer_of(app).worker.close(wait=10)
    eng.close()


def snapshot(store) -> dict:
    """Everything an edit could change, compared whole."""
    return {
        "scenes": [(s.id, repr(s.spec), s.placement.clock, s.placement.branch, s.placement.pos, s.placement.parent_id,
                    tuple(s.placement.lineage), s.status) for s in store.scenes()],
        "characters": store.characters(), "environments": store.environments(), "transitions": store.transitions(),
        "events": store.last_event_seq(),
    }


def _engine_call(eng, url: str, body: dict):
    """The engine method behind the route, called with the same values as Python objects."""
    if url == PATCH:
        return lambda: eng.update_scene("s01-arrival", **body)
    d = dict(body)
    if url == "/api/scenes":
        parent, kind, gap = d.pop("parent_id", None), d.pop("kind", "cut"), d.pop("gap", None)
        d["characters"] = tuple(d.get("characters", ()))
        return lambda: eng.add_scene(SceneSpec(**d), parent_id=parent, kind=kind, gap=gap)
    if url == "/api/characters":
        return lambda: eng.add_character(Character(**d))
    if url == "/api/environments":
        return lambda: eng.add_environment(Environment(**d))
    return lambda: eng.add_transition(Transition(d["from"], d["to"], d.get("kind"), d.get("gap")))


@pytest.mark.parametrize("what,url,body,pointer,fragment", CASES, ids=[c[0] for c in CASES])
def test_the_api_and_the_engine_refuse_the_same_way_and_change_nothing(studio, what, url, body, pointer, fragment):
    eng, app = studio
    before = snapshot(eng.store)
    r = app.test_client().open(url, method="PATCH" if url == PATCH else "POST", json=body,
                               headers={"X-Storygraph-Token": app.config["STORYGRAPH_TOKEN"]})
    answer = r.get_json()
    assert r.status_code == 400, answer
    assert answer["pointer"] == pointer and fragment in answer["error"], answer
    assert answer["error"].startswith(f"{pointer}: " if pointer else fragment[:10]), answer
    assert snapshot(eng.store) == before

    with pytest.raises(RuleError) as info:
        _engine_call(eng, url, body)()
    e = info.value
    assert isinstance(e, InvalidInput) and e.pointer == pointer and fragment in e.message
    if what == "unknown field":  # the engine also takes reference images, which the API does not: a longer list
        assert answer["error"].startswith(f"{pointer}: {e.message} (expected one of:")
    else:
        assert e.pointed() == answer["error"]  # word for word what the API said
    assert snapshot(eng.store) == before


def test_the_engine_refuses_a_bad_story_object_whole(studio):
    eng, _ = studio
    before = snapshot(eng.store)
    story = load_story(EXAMPLE)
    bad_gap = Story(story.id, story.title, story.characters, story.environments, story.scenes,
                    (Transition(story.scenes[0].id, story.scenes[1].id, "cut", HUGE),) + story.transitions[1:],
                    story.defaults, story.source_path)
    with pytest.raises(RuleError) as info:
        eng.load(bad_gap)
    assert (info.value.field, info.value.message) == ("transitions[0].gap", "1e+308 is out of range")
    clash = Story(story.id, story.title, story.characters, story.environments,
                  story.scenes + (SceneSpec(id="MARA", action="a"),), story.transitions, story.defaults)
    with pytest.raises(RuleError) as info:
        eng.load(clash)
    assert info.value.field == f"scenes[{len(story.scenes)}].id" and "differs only in case" in info.value.message
    assert snapshot(eng.store) == before


# the same value in a story file: the same message and the same expectation
FILE_CASES = [
    ("frames: 10", "frames", {"frames": 10}),
    ("seed: 18446744073709551616", "seed", {"seed": 2 ** 64}),
    ("fps: 0", "fps", {"fps": 0}),
    ("title: 5", "title", {"title": 5}),
    ("characters: [ghost]", "characters[0]", {"characters": ["ghost"]}),
    ("environment: nowhere", "environment", {"environment": "nowhere"}),
]


@pytest.mark.parametrize("line,field,body", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_story_file_says_the_same(studio, tmp_path, line, field, body):
    eng, _ = studio
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("  - id: s01-arrival\n")
    end = text.index("  - id: s02-package")
    key = line.split(":")[0]
    block = [ln for ln in text[start:end].splitlines(keepends=True) if not ln.startswith(f"    {key}:")]
    block.insert(1, f"    {line}\n")
    path = tmp_path / "story.yaml"
    path.write_text(text[:start] + "".join(block) + text[end:], encoding="utf-8")
    with pytest.raises(StoryFileError) as from_file:
        load_story(path)
    with pytest.raises(RuleError) as from_engine:
        eng.update_scene("s01-arrival", **body)
    assert from_file.value.field == f"scenes[0].{field}"
    assert (from_file.value.message, from_file.value.expected) == (from_engine.value.message,
                                                                   from_engine.value.expected)


def test_clocks_stay_finite_in_what_the_viewer_sends(studio):
    """No value the rules let through makes a clock the viewer cannot send as JSON."""
    eng, app = studio
    g = app.test_client().get("/api/graph")
    import json

    data = json.loads(g.get_data(as_text=True), parse_constant=lambda c: pytest.fail(f"{c} in the graph JSON"))
    clocks = [n["data"]["clock"] for n in data["nodes"] if n["data"]["type"] == "scene"]
    assert clocks and all(math.isfinite(c) for c in clocks)


def test_a_clock_stored_before_clocks_were_bounded_is_sent_as_null(tmp_path):
    """A graph written before the bounds may hold an infinite clock: the viewer answers null, never Infinity."""
    import json

    from support import example_store
    from storygraph.domain import Placement

    store, story = example_store(tmp_path / "story")
    try:
        spec = story.scenes[-1]
        store.upsert_scene(spec, Placement(spec.id, math.inf, spec.id, 0))
        app = create_app(store, story_dir=store.path, warm=False)
        client = app.test_client()

        def strict(text):
            return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the viewer's JSON"))

        nodes = {n["data"]["id"]: n for n in strict(client.get("/api/graph").get_data(as_text=True))["nodes"]}
        assert nodes[spec.id]["data"]["clock"] is None
        assert strict(client.get(f"/api/scenes/{spec.id}").get_data(as_text=True))["clock"] is None
    finally:
        store.close()
