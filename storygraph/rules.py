"""The rules a story obeys, written once: every way a story changes is checked here, with the same messages.

A story changes through a story file (:mod:`storygraph.storyfile`), the Python API (``StoryEngine.load``,
``add_character``, ``update_scene``, ...) and the viewer's HTTP API. All three read their input against the
schemas below and run the same checks across records; only the way a problem is located differs: a story file
names ``file:line: field``, the Python API a field path (``scenes[3].characters[1]``), the HTTP API a JSON
pointer (``/characters/1``). A problem is a :class:`RuleError` (an ``InvalidInput``: exit 2, HTTP 400) and is
found before anything is written.

The ranges of numbers come from the declarations in :mod:`storygraph.domain` (``Setting`` metadata on the
fields of ``GenerationDefaults``, ``Character``, ``Reference`` and ``Transition``), so a range is stated once.
Reading is linear in the input: lookups are by set or dict, and the one suggestion search ("did you mean")
runs only once a problem is found.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Optional, Sequence, Union

from .domain import (
    MAX_CLOCK, MEMORY_MODES, TRANSITION_KINDS, Character, Environment, GenerationDefaults, Placement, Reference, SceneSpec, Setting,
    Story, Transition, generation_settings,
)
from .errors import InvalidInput
from .timeline import TimelineError, late_clock, place_scenes

__all__ = [
    "RuleError", "Invalid", "Context", "ID_PATTERN", "REFERENCE_KINDS", "MAX_TEXT", "MAX_NAME", "MAX_CAST",
    "MAX_REFERENCES", "MAX_IMAGE_BYTES", "STORY", "DEFAULTS", "CHARACTER", "ENVIRONMENT", "REFERENCE", "SCENE",
    "TRANSITION", "STORY_FILE", "SCENE_EDIT", "NEW_SCENE", "read", "read_json", "Known", "check_scene_links",
    "check_transitions", "check_memory_mode", "check_story", "describe", "did_you_mean", "one_of", "field_path", "json_pointer",
    "scene_fields", "character_fields", "environment_fields", "transition_fields", "reference_fields",
]

#: Ids become folder names and graph keys.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ID_EXPECTED = "an id: a letter or digit, then up to 127 letters, digits, '_', '.' or '-'"
REFERENCE_KINDS: tuple[str, ...] = ("character", "costume", "place", "frame")
#: Characters in a description, an action, a prompt; and in a name or a title.
MAX_TEXT = 10_000
MAX_NAME = 200
#: Characters in one scene, and reference images of one scene.
MAX_CAST = 64
MAX_REFERENCES = 16
#: A reference image file, at most; its pixels, at most (a decompression bomb is refused before decoding).
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 64_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")

Path_ = tuple  # a field path: keys (str) and list indices (int)


# -- problems and where they are ---------------------------------------------------------------------------


def field_path(path: Path_) -> str:
    """``("scenes", 3, "characters", 1)`` -> ``scenes[3].characters[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def json_pointer(path: Path_) -> str:
    """``("characters", 1)`` -> ``/characters/1`` (RFC 6901)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class Invalid(Exception):
    """A value that breaks a rule, before it is located: the reader that found it adds where."""

    def __init__(self, message: str, expected: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.expected = expected


class RuleError(InvalidInput):
    """A story change that breaks a rule: ``path`` (field path from the input's root), ``message``, ``expected``.

    ``field`` is the path written ``scenes[3].characters[1]``, ``pointer`` the JSON pointer of the same place
    (what the HTTP API reports). ``str()`` gives ``field: message (expected ...)``.
    """

    label = "invalid input:"

    def __init__(self, path: Path_, message: str, expected: Optional[str] = None):
        self.path = tuple(path)
        self.message = message
        self.expected = expected
        super().__init__(self.path, message, expected)

    @property
    def field(self) -> str:
        return field_path(self.path)

    @property
    def pointer(self) -> str:
        return json_pointer(self.path)

    def _text(self, where: str) -> str:
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} (expected {self.expected})" if self.expected else text

    def __str__(self) -> str:
        return self._text(self.field)

    def pointed(self) -> str:
        """The message with the JSON pointer in front (``/characters/1: unknown character ...``)."""
        return self._text(self.pointer)


# -- words ---------------------------------------------------------------------------------------------------


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(value: Any) -> str:
    """A value in words, for "got ..." messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10 ** 30 else f"{len(str(abs(value)))} digits"
        return f"an integer ({text})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_short(value)!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def one_of(options: Sequence[str], limit: int = 12) -> str:
    if not options:
        return "one of: (none defined)"
    options = list(options)
    shown = ", ".join(options[:limit])
    more = f", … ({len(options) - limit} more)" if len(options) > limit else ""
    return f"one of: {shown}{more}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    options = list(options)
    if len(options) > 20_000 or len(word) > 200:  # difflib is linear in the options with a large constant
        return ""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- values --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What checks of file references need: the folder relative paths resolve against, and the folders a
    reference image may come from (the story file's folder tree and the ``[story] reference_folders`` of
    ``storygraph.toml``). No ``base_dir``: reference paths are not accepted."""

    base_dir: Optional[Path] = None
    reference_roots: tuple = ()
    checked: dict = field(default_factory=dict, compare=False, repr=False)  # path as given -> result, per input

    @classmethod
    def for_file(cls, story_file, extra_roots: Iterable = ()) -> "Context":
        base = Path(os.path.abspath(story_file)).parent
        return cls(base, (base, *[Path(r) for r in extra_roots]))


@dataclass(frozen=True)
class Value:
    """A scalar: ``check(value, context)`` returns the value to keep or raises :class:`Invalid`."""

    check: Callable[[Any, Context], Any]
    expected: str


@dataclass(frozen=True)
class ListOf:
    item: "Schema"
    expected: str
    max_items: Optional[int] = None
    what: str = "items"


@dataclass(frozen=True)
class Key:
    schema: "Schema"
    required: bool = False
    nullable: bool = True  # an optional key given as null reads as None (not checked)


@dataclass(frozen=True)
class Record:
    keys: dict
    expected: str

    def without(self, *names: str) -> "Record":
        return Record({k: v for k, v in self.keys.items() if k not in names}, self.expected)

    def optional(self) -> "Record":
        """The same keys, none of them required (an edit names only what changes); a key that was required
        may still not be null."""
        return Record({k: Key(v.schema, False, not v.required) for k, v in self.keys.items()}, self.expected)

    def plus(self, **keys: Key) -> "Record":
        return Record({**self.keys, **keys}, self.expected)


Schema = Union[Value, ListOf, Record]


def _quote_hint(value: Any) -> str:
    return "; put it in quotes" if isinstance(value, (bool, int, float)) or value is None else ""


def text(nonempty: bool = False, limit: int = MAX_TEXT) -> Value:
    expected = ("a non-empty string" if nonempty else "a string") + (f" of at most {limit} characters")

    def check(v: Any, ctx: Context) -> str:
        if not isinstance(v, str):
            raise Invalid(f"got {describe(v)}{_quote_hint(v)}")
        if nonempty and not v.strip():
            raise Invalid("must not be empty")
        if len(v) > limit:
            raise Invalid(f"{len(v)} characters, more than {limit}")
        return v
    return Value(check, expected)


def _ident(v: Any, ctx: Context) -> str:
    if not isinstance(v, str):
        raise Invalid(f"got {describe(v)}; ids are strings, put it in quotes")
    if not v:
        raise Invalid("empty id")
    if not ID_PATTERN.fullmatch(v):
        raise Invalid(f"invalid id {_short(v)!r}")
    return v


IDENT = Value(_ident, ID_EXPECTED)


def choice(options: Sequence[str], what: str) -> Value:
    options = tuple(options)

    def check(v: Any, ctx: Context) -> str:
        if not isinstance(v, str):
            raise Invalid(f"got {describe(v)}")
        if v not in options:
            raise Invalid(f"unknown {what} {_short(v)!r}{did_you_mean(v, options)}")
        return v
    return Value(check, one_of(options))


def declared(kind: type, s: Setting) -> Value:
    """The rule of a declared setting (:class:`storygraph.domain.Setting`): its type, range, step and choices."""
    if kind is str:
        return text(limit=MAX_TEXT) if not s.choices else choice(s.choices, "value")
    if kind is bool:
        def check_bool(v: Any, ctx: Context) -> bool:
            if not isinstance(v, bool):
                raise Invalid(f"got {describe(v)}")
            return v
        return Value(check_bool, s.expected)
    accepted = int if kind is int else (int, float)

    def check_number(v: Any, ctx: Context):
        if isinstance(v, bool) or not isinstance(v, accepted):
            raise Invalid(f"got {describe(v)}")
        if kind is int:  # an integer setting takes a step or a set of values: "not allowed" says both
            if not s.allows(v):
                raise Invalid(f"{v if abs(v) < 10 ** 30 else describe(v)} is not allowed")
            return v
        try:
            v = float(v)
        except OverflowError:
            raise Invalid("a number too large to hold") from None
        if not math.isfinite(v):
            raise Invalid(f"{v} is not a finite number")
        if not s.allows(v):
            raise Invalid(f"{v:g} is out of range")
        return v
    return Value(check_number, s.expected)


def _declared_field(cls: type, name: str) -> Value:
    f = next(f for f in fields(cls) if f.name == name)
    kind = {"int": int, "float": float, "Optional[float]": float, "Optional[int]": int}.get(str(f.type), float)
    return declared(kind, f.metadata["setting"])


def _image(v: Any, ctx: Context) -> str:
    """An existing image file inside one of ``ctx.reference_roots``; returns its absolute path. Each path is
    checked once per input (an alias repeating a reference a thousand times costs one check)."""
    if isinstance(v, str) and v in ctx.checked:
        done = ctx.checked[v]
        if isinstance(done, Invalid):
            raise done
        return done
    try:
        out = _check_image_path(v, ctx)
    except Invalid as e:
        if isinstance(v, str):
            ctx.checked[v] = e
        raise
    ctx.checked[v] = out
    return out


def _check_image_path(v: Any, ctx: Context) -> str:
    if not isinstance(v, str):
        raise Invalid(f"got {describe(v)}{_quote_hint(v)}")
    if not v.strip():
        raise Invalid("must not be empty")
    if "\0" in v:
        raise Invalid("a path with a NUL character")
    if ctx.base_dir is None:
        raise Invalid("reference images are named in story files only")
    full = Path(os.path.normpath(ctx.base_dir / v))
    try:
        real = Path(os.path.realpath(full))
        st = os.stat(real)
    except FileNotFoundError:
        raise Invalid(f"file not found: {_short(str(full), 200)}") from None
    except OSError as e:
        raise Invalid(f"cannot read {_short(str(full), 200)}: {e.strerror or e}") from None
    roots = [Path(os.path.realpath(r)) for r in ctx.reference_roots]
    if not any(real == r or r in real.parents for r in roots):
        leads = f" (it leads to {_short(str(real), 200)})" if real != full else ""
        raise Invalid(f"{_short(str(full), 200)}{leads} is outside the folders reference images may come from "
                      f"({', '.join(str(r) for r in roots)})")
    import stat as stat_mod

    if not stat_mod.S_ISREG(st.st_mode):
        raise Invalid(f"not a file: {_short(str(full), 200)}")
    if st.st_size > MAX_IMAGE_BYTES:
        raise Invalid(f"{st.st_size} bytes, more than {MAX_IMAGE_BYTES}")
    _check_image(real)
    return str(full)


def _check_image(path: Path) -> None:
    """Refuse anything that is not a PNG, JPEG or WebP image PIL can read whole (magic bytes, header, data)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format
                w, h = im.size
                if fmt not in IMAGE_FORMATS:
                    raise Invalid(f"a {fmt} image, not one of {', '.join(IMAGE_FORMATS)}")
                if w * h > MAX_IMAGE_PIXELS:
                    raise Invalid(f"{w}x{h} pixels, more than {MAX_IMAGE_PIXELS}")
                im.verify()
    except Invalid:
        raise
    except UnidentifiedImageError:
        raise Invalid(f"not an image: {_short(str(path), 200)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Invalid(f"more than {MAX_IMAGE_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL reports broken files through all of these
        raise Invalid(f"a broken image: {_short(str(e), 120)}") from None


IMAGE = Value(_image, f"an image file ({', '.join(IMAGE_FORMATS)}) in the story file's folder tree or a folder "
                      "named in [story] reference_folders of storygraph.toml")


# -- schemas: what each kind of record holds -----------------------------------------------------------------

GENERATION = {name: Key(declared(kind, s)) for name, kind, s in generation_settings()}
DEFAULTS = Record(GENERATION, "a mapping of generation defaults")
STORY = Record({"id": Key(IDENT, True), "title": Key(text(limit=MAX_NAME))}, "a mapping {id, title}")
CHARACTER = Record({
    "id": Key(IDENT, True), "name": Key(text(True, MAX_NAME), True), "description": Key(text(True), True),
    "reference": Key(IMAGE), "decay_tau": Key(_declared_field(Character, "decay_tau")),
}, "a character mapping")
ENVIRONMENT = Record({
    "id": Key(IDENT, True), "description": Key(text(True), True), "name": Key(text(limit=MAX_NAME)),
    "reference": Key(IMAGE),
}, "an environment mapping")
REFERENCE = Record({
    "path": Key(IMAGE, True), "kind": Key(choice(REFERENCE_KINDS, "reference kind")), "character": Key(IDENT),
    "frame_index": Key(_declared_field(Reference, "frame_index")),
    "strength": Key(_declared_field(Reference, "strength")),
}, "a reference mapping")
SCENE = Record({
    "id": Key(IDENT, True), "action": Key(text(True), True),
    "characters": Key(ListOf(IDENT, "a list of character ids", MAX_CAST, "characters")),
    "environment": Key(IDENT), "title": Key(text(limit=MAX_NAME)), "lighting": Key(text()), "weather": Key(text()),
    "camera": Key(text()), **GENERATION,
    "references": Key(ListOf(REFERENCE, "a list of reference mappings", MAX_REFERENCES, "references")),
    "memory": Key(choice(MEMORY_MODES, "memory mode")),
}, "a scene mapping")
GAP = _declared_field(Transition, "gap")
TRANSITION_KIND = choice(TRANSITION_KINDS, "transition kind")
TRANSITION = Record({
    "from": Key(IDENT, True), "to": Key(IDENT, True), "kind": Key(TRANSITION_KIND, True), "gap": Key(GAP),
}, "a transition mapping")
STORY_FILE = Record({
    "story": Key(STORY, True), "defaults": Key(DEFAULTS),
    "characters": Key(ListOf(CHARACTER, "a list of character mappings")),
    "environments": Key(ListOf(ENVIRONMENT, "a list of environment mappings")),
    "scenes": Key(ListOf(SCENE, "a list of scene mappings"), True),
    "transitions": Key(ListOf(TRANSITION, "a list of transition mappings")),
}, "a mapping with keys story, defaults, characters, environments, scenes, transitions")
#: A change to a scene: any of its fields but the id.
SCENE_EDIT = SCENE.without("id").optional()
#: A new scene, with where it goes: after ``parent_id`` through a transition of ``kind`` and ``gap``.
NEW_SCENE = SCENE.plus(parent_id=Key(IDENT), kind=Key(TRANSITION_KIND), gap=Key(GAP))


# -- reading input against a schema --------------------------------------------------------------------------


class Tree:
    """How :func:`read` sees an input: JSON-like Python values here; the story file reader walks YAML nodes
    with its own subclass (lines, tags, merge keys, a budget)."""

    def count(self, node: Any, path: Path_) -> None:
        """Called once per value visited."""

    def shape(self, node: Any) -> str:
        if isinstance(node, dict):
            return "map"
        if isinstance(node, (list, tuple)):
            return "seq"
        return "scalar"

    def scalar(self, node: Any, path: Path_) -> Any:
        return node

    def items(self, node: Any, path: Path_) -> Iterable[tuple[str, Any, Any]]:
        """``(key, where the key is, value)`` for each pair of a mapping."""
        for key, value in node.items():
            if not isinstance(key, str):
                self.fail(node, path + (str(key),), f"a key must be a word, got {describe(key)}", "a string key")
            yield key, value, value

    def elements(self, node: Any) -> Sequence:
        return node

    def length(self, node: Any) -> int:
        return len(node)

    def is_null(self, node: Any) -> bool:
        return node is None

    def describe(self, node: Any, path: Path_) -> str:
        return describe(node)

    def fail(self, node: Any, path: Path_, message: str, expected: Optional[str] = None) -> NoReturn:
        raise RuleError(path, message, expected)


def read(tree: Tree, node: Any, schema: Schema, path: Path_ = (), ctx: Optional[Context] = None) -> Any:
    """``node`` checked against ``schema``: a dict for a Record (an optional key given as null maps to None),
    a list for a ListOf, the checked value for a Value. The first problem raises through ``tree.fail``."""
    if ctx is None:
        ctx = Context()
    tree.count(node, path)
    shape = tree.shape(node)
    if isinstance(schema, Value):
        if shape != "scalar":
            tree.fail(node, path, f"got {tree.describe(node, path)}", schema.expected)
        try:
            return schema.check(tree.scalar(node, path), ctx)
        except Invalid as e:
            tree.fail(node, path, e.message, e.expected or schema.expected)
    if isinstance(schema, ListOf):
        if shape != "seq":
            tree.fail(node, path, f"got {tree.describe(node, path)}", schema.expected)
        if schema.max_items is not None and tree.length(node) > schema.max_items:
            tree.fail(node, path, f"{tree.length(node)} {schema.what}, more than {schema.max_items}",
                      f"{schema.expected}, at most {schema.max_items}")
        return [read(tree, child, schema.item, path + (i,), ctx) for i, child in enumerate(tree.elements(node))]
    if shape != "map":
        tree.fail(node, path, f"got {tree.describe(node, path)}", schema.expected)
    out: dict[str, Any] = {}
    keys = schema.keys
    for key, key_node, value in tree.items(node, path):
        rule = keys.get(key)
        if rule is None:
            tree.fail(key_node, path + (key,), f"unknown key {_short(key)!r}{did_you_mean(key, keys)}",
                      one_of(list(keys), limit=len(keys)))
        if not rule.required and rule.nullable and tree.is_null(value):
            tree.count(value, path + (key,))
            out[key] = None  # `key: ~` on an optional key: the same as leaving it out (an edit: back to the default)
            continue
        out[key] = read(tree, value, rule.schema, path + (key,), ctx)
    for key, rule in keys.items():
        if rule.required and key not in out:
            tree.fail(node, path + (key,), f"missing required field {key!r}", f"{key!r} in {schema.expected}")
    return out


def read_json(value: Any, schema: Schema, path: Path_ = (), ctx: Optional[Context] = None) -> Any:
    """JSON-like Python values (an HTTP body, a record's fields) checked against ``schema``."""
    return read(Tree(), value, schema, path, ctx)


# -- domain objects as input ---------------------------------------------------------------------------------


def reference_fields(r: Reference) -> dict:
    return {"path": r.path, "kind": r.kind, "character": r.character, "frame_index": r.frame_index,
            "strength": r.strength}


def scene_fields(spec: SceneSpec) -> dict:
    """A scene spec as the keys of :data:`SCENE` (fields left at None are left out)."""
    out = {"id": spec.id, "action": spec.action, "characters": list(spec.characters), "environment": spec.environment,
           "title": spec.title, "lighting": spec.lighting, "weather": spec.weather, "camera": spec.camera,
           "references": [reference_fields(r) for r in spec.references], "memory": spec.memory}
    out.update(spec.generation())
    return {k: v for k, v in out.items() if v is not None}


def character_fields(c: Character) -> dict:
    out = {"id": c.id, "name": c.name, "description": c.description, "reference": c.reference_path,
           "decay_tau": c.decay_tau}
    return {k: v for k, v in out.items() if v is not None}


def environment_fields(e: Environment) -> dict:
    out = {"id": e.id, "description": e.description, "name": e.name, "reference": e.reference_path}
    return {k: v for k, v in out.items() if v is not None}


def transition_fields(t: Transition) -> dict:
    out = {"from": t.from_id, "to": t.to_id, "kind": t.kind, "gap": t.gap}
    return {k: v for k, v in out.items() if v is not None}


# -- rules across records ------------------------------------------------------------------------------------

Where = Callable[[Path_], str]  # " at line 7" for a story file, "" where a place has no words of its own


def _nowhere(path: Path_) -> str:
    return ""


class Known:
    """The ids a story holds, for checks across records. Ids are unique across characters, environments and
    scenes, ignoring case (they name folders): ``lower id -> (id, kind, path or None)``."""

    def __init__(self, where: Where = _nowhere):
        self.where = where
        self.ids: dict[str, tuple[str, str, Optional[Path_]]] = {}
        self.characters: dict[str, None] = {}  # insertion-ordered sets
        self.environments: dict[str, None] = {}
        self.scenes: dict[str, None] = {}

    def _kind(self, kind: str) -> dict:
        return {"character": self.characters, "environment": self.environments, "scene": self.scenes}[kind]

    def add(self, ident: str, kind: str, path: Optional[Path_] = None, replace_same: bool = False) -> None:
        """Record an id; a clash raises at ``path + ("id",)``. ``replace_same``: the same id of the same kind
        is an edit of that record, not a clash."""
        prior = self.ids.get(ident.lower())
        if prior is not None and not (replace_same and prior[0] == ident and prior[1] == kind):
            pid, pkind, ppath = prior
            same = "" if pid == ident else f" ({pid!r} differs only in case)"
            at = self.where(ppath + ("id",)) if ppath is not None else ""
            raise RuleError((path or ()) + ("id",), f"duplicate id {ident!r}: already used by {pkind} {pid!r}{at}{same}",
                            "an id unique across characters, environments and scenes (ignoring case)")
        self.ids[ident.lower()] = (ident, kind, path)
        self._kind(kind)[ident] = None

    @classmethod
    def of(cls, characters: Iterable[str] = (), environments: Iterable[str] = (), scenes: Iterable[str] = (),
           where: Where = _nowhere) -> "Known":
        k = cls(where)
        for kind, ids in (("character", characters), ("environment", environments), ("scene", scenes)):
            for i in ids:
                k.ids.setdefault(i.lower(), (i, kind, None))
                k._kind(kind)[i] = None
        return k


def _unknown(ident: str, what: str, known: dict) -> Invalid:
    return Invalid(f"unknown {what} {ident!r}{did_you_mean(ident, known)}", one_of(list(known)))


def check_scene_links(spec: SceneSpec, path: Path_, known: Known, frames: int) -> None:
    """A scene's links to the rest of the story: its characters and environment exist, each character once;
    its references show one of its characters (kinds character and costume) or none (place and frame) and
    sit inside its ``frames``."""
    seen: set = set()
    for i, cid in enumerate(spec.characters):
        at = path + ("characters", i)
        if cid not in known.characters:
            e = _unknown(cid, "character", known.characters)
            raise RuleError(at, e.message, e.expected)
        if cid in seen:
            raise RuleError(at, f"character {cid!r} is listed twice", "each character once per scene")
        seen.add(cid)
    if spec.environment is not None and spec.environment not in known.environments:
        e = _unknown(spec.environment, "environment", known.environments)
        raise RuleError(path + ("environment",), e.message, e.expected)
    cast = list(spec.characters)
    for i, ref in enumerate(spec.references):
        at = path + ("references", i)
        if ref.kind in ("character", "costume"):
            if ref.character is None:
                raise RuleError(at + ("character",), f"a {ref.kind} reference needs the character it shows",
                                "one of the scene's characters: " + (", ".join(cast) or "(none)"))
            if ref.character not in seen:
                raise RuleError(at + ("character",), f"character {ref.character!r} is not in this scene",
                                one_of(cast))
        elif ref.character is not None:
            raise RuleError(at + ("character",), f"a {ref.kind} reference names no character",
                            "no 'character' key for kinds place and frame")
        if ref.frame_index >= frames:
            raise RuleError(at + ("frame_index",), f"frame {ref.frame_index} is past the scene's {frames} frames",
                            f"a frame index from 0 to {frames - 1}")


def check_memory_mode(spec: SceneSpec, path: Path_, incoming: Optional[str]) -> None:
    """Memory mode ``extend`` continues the parent's last frames: only on a scene entered by a continuous
    transition (``incoming``: the kind of the scene's incoming transition, None when it opens a timeline)."""
    if spec.memory == "extend" and incoming != "continuous":
        came = f"a {incoming} transition" if incoming else "no transition (it opens a timeline)"
        raise RuleError(path + ("memory",),
                        f"memory mode extend continues the parent's last frames, but this scene follows {came}",
                        "extend only on a scene entered by a continuous transition; else one of: context, "
                        "reference, keyframe")


def check_transitions(transitions: Sequence[Transition], paths: Sequence[Path_], scene_ids: Sequence[str],
                      known_scenes: Optional[Iterable[str]] = None, where: Where = _nowhere,
                      clocks: Optional[dict] = None) -> dict[str, Placement]:
    """Transitions make a forest of timelines whose clocks stay finite; returns the placements.

    Each joins two known, different scenes; a scene has at most one incoming transition; there is no cycle;
    no clock passes :data:`~storygraph.domain.MAX_CLOCK`. ``paths[i]`` locates ``transitions[i]``. O(scenes +
    transitions). ``clocks``: clocks of root scenes that start later than 0 (none in a story file)."""
    known = set(scene_ids) if known_scenes is None else set(known_scenes)
    incoming: dict[str, int] = {}
    for i, t in enumerate(transitions):
        for key, sid in (("from", t.from_id), ("to", t.to_id)):
            if sid not in known:
                raise RuleError(paths[i] + (key,), f"unknown scene {sid!r}{did_you_mean(sid, scene_ids)}",
                                one_of(list(scene_ids)))
        if t.from_id == t.to_id:
            raise RuleError(paths[i], f"a transition from scene {t.from_id!r} to itself",
                            "a transition to another scene")
        if t.to_id in incoming:
            first = incoming[t.to_id]
            raise RuleError(paths[i], f"scene {t.to_id!r} already has an incoming transition (from "
                            f"{transitions[first].from_id!r}{where(paths[first])})",
                            "at most one transition into each scene: timelines branch but never merge")
        incoming[t.to_id] = i
    try:
        placements = place_scenes(list(scene_ids), list(transitions))
    except TimelineError as e:
        if not e.cycle:
            raise
        edges = set(zip(e.cycle, e.cycle[1:]))
        last = max(i for i, t in enumerate(transitions) if (t.from_id, t.to_id) in edges)
        raise RuleError(paths[last], "transitions form a cycle: " + " -> ".join(e.cycle),
                        "transitions that move forward in story time (timelines branch but never loop)") from None
    late = late_clock(placements)
    if late is not None:
        i = incoming.get(late.scene_id)
        at = paths[i] + ("gap",) if i is not None else ()
        raise RuleError(at, f"scene {late.scene_id!r} would sit at story time {late.clock:g}, past {MAX_CLOCK:g}",
                        "gaps that keep every clock at most " + f"{MAX_CLOCK:g}")
    return placements


def check_story(story: Story, where: Where = _nowhere, *, records: bool = True,
                ctx: Optional[Context] = None) -> None:
    """Every rule of a whole story (given as domain objects): each record against its schema (``records``),
    ids unique, links known, transitions a forest with finite clocks. Paths are those of a story file
    (``scenes[3].characters[1]``). The reference images of a story built in Python are checked against
    ``ctx`` (absolute paths, roots) when it names roots, else taken as given."""
    ctx = ctx or Context()
    if records:
        image_ok = bool(ctx.reference_roots)
        read_json({"id": story.id, "title": story.title}, STORY, ("story",))
        defaults = {f.name: getattr(story.defaults, f.name) for f in fields(GenerationDefaults)}
        read_json(defaults, DEFAULTS, ("defaults",))
        for i, c in enumerate(story.characters):
            read_json(character_fields(c), CHARACTER if image_ok else CHARACTER.without("reference"),
                      ("characters", i), ctx)
        for i, e in enumerate(story.environments):
            read_json(environment_fields(e), ENVIRONMENT if image_ok else ENVIRONMENT.without("reference"),
                      ("environments", i), ctx)
        scene_schema = SCENE if image_ok else _SCENE_NO_IMAGES
        for i, s in enumerate(story.scenes):
            read_json(scene_fields(s), scene_schema, ("scenes", i), ctx)
        for i, t in enumerate(story.transitions):
            read_json(transition_fields(t), TRANSITION, ("transitions", i))
    if not story.scenes:
        raise RuleError(("scenes",), "no scenes", "a list of at least one scene")
    known = Known(where)
    for i, c in enumerate(story.characters):
        known.add(c.id, "character", ("characters", i))
    for i, e in enumerate(story.environments):
        known.add(e.id, "environment", ("environments", i))
    for i, s in enumerate(story.scenes):
        known.add(s.id, "scene", ("scenes", i))
    default_frames = story.defaults.frames
    for i, s in enumerate(story.scenes):
        check_scene_links(s, ("scenes", i), known, s.frames if s.frames is not None else default_frames)
    check_transitions(story.transitions, [("transitions", i) for i in range(len(story.transitions))],
                      [s.id for s in story.scenes], known.scenes, where)
    into = {t.to_id: t.kind for t in story.transitions}
    for i, s in enumerate(story.scenes):
        check_memory_mode(s, ("scenes", i), into.get(s.id))


_SCENE_NO_IMAGES = SCENE.plus(references=Key(ListOf(
    REFERENCE.plus(path=Key(text(True, 4096), True)), "a list of reference mappings", MAX_REFERENCES, "references")))
