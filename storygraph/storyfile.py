"""Story files: YAML in, :class:`storygraph.domain.Story` out.

Every problem is a :class:`StoryFileError` naming the file, the line, the field (a dotted path such as
``scenes[3].characters[1]``, indices from 0) and what was expected. Only safe YAML is read (no Python
tags), nesting and alias expansion are bounded, and nothing is ever written anywhere. The format is
described in docs/story-format.md.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Union

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .domain import (
    MEMORY_MODES, TRANSITION_KINDS, Character, Environment, GenerationDefaults, Reference, SceneSpec, Setting, Story, Transition,
    generation_settings,
)
from .errors import InvalidInput
from .timeline import TimelineError, find_cycle, place_scenes

__all__ = ["StoryFileError", "load_story", "ID_PATTERN", "MAX_FILE_BYTES", "REFERENCE_KINDS"]

#: Larger story files are refused before parsing.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Ids become folder names and graph keys.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
REFERENCE_KINDS: tuple[str, ...] = ("character", "costume", "place", "frame")

# A story file nests five levels deep; anything far deeper is hostile or broken (and libyaml's
# composer recurses in C, so a very deep document must be refused before composing it).
_MAX_DEPTH = 32
# Values visited while reading, aliases expanded: bounds the work of alias bombs.
_MAX_VALUES = 2_000_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_SAFE_TAGS = frozenset(t for t in SafeConstructor.yaml_constructors if t is not None)
_NULL_TAG = "tag:yaml.org,2002:null"


class StoryFileError(InvalidInput):
    """A story file that cannot be loaded, and exactly where and why.

    ``path`` is the file as the caller named it, ``line`` 1-based (None when the problem is not on a
    line), ``field`` a dotted path (``""`` for the whole file), ``message`` what is wrong and
    ``expected`` what would have been right (None where the message says it).
    """

    label = "invalid story file"

    def __init__(self, path: Union[str, os.PathLike], line: Optional[int], field: str, message: str,
                 expected: Optional[str] = None, column: Optional[int] = None):
        self.path = os.fspath(path)
        self.line = line
        self.field = field
        self.message = message
        self.expected = expected
        self.column = column
        super().__init__(self.path, line, field, message, expected, column)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return f"{text} (expected {self.expected})" if self.expected else text


# ----------------------------------------------------------------------------------------------
# Reading the node tree


def _line(node: Optional[Node]) -> Optional[int]:
    return None if node is None else node.start_mark.line + 1


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_short(value)!r})"
    if isinstance(value, (list, tuple, SequenceNode)):
        return "a list"
    if isinstance(value, (dict, MappingNode)):
        return "a mapping"
    return f"a {type(value).__name__} ({_short(str(value))})"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_of(options: list[str], limit: int = 12) -> str:
    if not options:
        return "one of: (none defined)"
    shown = ", ".join(options[:limit])
    more = f", … ({len(options) - limit} more)" if len(options) > limit else ""
    return f"one of: {shown}{more}"


def _did_you_mean(word: str, options: list[str]) -> str:
    if len(options) > 20_000:  # difflib is linear in the options with a large constant
        return ""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


@dataclass
class _Rec:
    """A mapping read against a spec: parsed values, plus the node of each key and value for errors."""

    node: MappingNode
    field: str
    values: dict[str, Any] = dc_field(default_factory=dict)
    nodes: dict[str, Node] = dc_field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def line(self, key: Optional[str] = None) -> Optional[int]:
        return _line(self.nodes.get(key, self.node) if key else self.node)

    def sub(self, key: str) -> str:
        return _join(self.field, key)


Parser = Callable[["_Reader", Node, str], Any]


@dataclass(frozen=True)
class _F:
    """One key of a mapping: how to read its value, and whether it must be present."""

    parse: Parser
    required: bool = False


class _Reader:
    def __init__(self, path: str, base_dir: Path):
        self.path = path
        self.base_dir = base_dir
        self.budget = _MAX_VALUES
        self.constructor = SafeConstructor()

    def fail(self, node_or_line: Union[Node, int, None], field: str, message: str,
             expected: Optional[str] = None) -> NoReturn:
        line = node_or_line if isinstance(node_or_line, int) or node_or_line is None else _line(node_or_line)
        column = node_or_line.start_mark.column + 1 if isinstance(node_or_line, Node) else None
        raise StoryFileError(self.path, line, field, message, expected, column)

    def count(self, node: Node, field: str) -> None:
        self.budget -= 1
        if self.budget < 0:
            self.fail(node, field, f"the file expands to more than {_MAX_VALUES} values (aliases?)",
                      "a story file of sane size")
        if node.tag not in _SAFE_TAGS:
            self.fail(node, field, f"unsupported YAML tag {node.tag!r}", "plain YAML values (no tags)")

    def scalar(self, node: Node, field: str, expected: str) -> Any:
        self.count(node, field)
        if not isinstance(node, ScalarNode):
            self.fail(node, field, f"got {_describe(node)}", expected)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e)
            self.fail(node, field, f"cannot read this value: {problem}", expected)

    def mapping(self, node: Node, field: str, spec: dict[str, _F], what: str) -> _Rec:
        self.count(node, field)
        if not isinstance(node, MappingNode):
            got = _describe(self.scalar(node, field, what)) if isinstance(node, ScalarNode) else _describe(node)
            self.fail(node, field, f"got {got}", what)
        seen: dict[str, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node, field)
            if key in seen:
                self.fail(key_node, _join(field, key),
                          f"duplicate key {key!r} (first at line {_line(seen[key])})", "each key once")
            seen[key] = key_node
        try:
            self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as e:
            line = e.problem_mark.line + 1 if e.problem_mark else _line(node)
            self.fail(line, _join(field, "<<"), f"bad merge key: {e.problem}", "`<<: *anchor` naming a mapping")
        rec = _Rec(node, field)
        pairs: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, field)
            if key not in spec:
                allowed = list(spec)
                self.fail(key_node, _join(field, key), f"unknown key {key!r}{_did_you_mean(key, allowed)}",
                          _one_of(allowed, limit=len(allowed)))
            pairs[key] = (key_node, value_node)
        for key, f in spec.items():
            if key not in pairs:
                if f.required:
                    self.fail(node, _join(field, key), f"missing required field {key!r}",
                              f"{key!r} in {what}")
                continue
            key_node, value_node = pairs[key]
            if value_node.tag == _NULL_TAG and isinstance(value_node, ScalarNode) and not f.required:
                continue  # `key: ~` on an optional field is the same as leaving it out
            rec.nodes[key] = value_node
            rec.values[key] = f.parse(self, value_node, _join(field, key))
        return rec

    def _key(self, key_node: Node, field: str) -> str:
        if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
            shown = key_node.value if isinstance(key_node, ScalarNode) else "?"
            got = _describe(self.scalar(key_node, field, "a key")) if isinstance(key_node, ScalarNode) \
                else _describe(key_node)
            self.fail(key_node, _join(field, shown), f"a key must be a word, got {got}", "a string key")
        return key_node.value

    def sequence(self, node: Node, field: str, item: Parser, what: str) -> list[Any]:
        self.count(node, field)
        if not isinstance(node, SequenceNode):
            got = _describe(self.scalar(node, field, what)) if isinstance(node, ScalarNode) else _describe(node)
            self.fail(node, field, f"got {got}", what)
        return [item(self, child, f"{field}[{i}]") for i, child in enumerate(node.value)]


# ----------------------------------------------------------------------------------------------
# Value parsers


def _string(nonempty: bool = False) -> Parser:
    expected = "a non-empty string" if nonempty else "a string"

    def parse(r: _Reader, node: Node, field: str) -> str:
        v = r.scalar(node, field, expected)
        if not isinstance(v, str):
            hint = "; put it in quotes" if isinstance(v, (bool, int, float)) or v is None else ""
            r.fail(node, field, f"got {_describe(v)}{hint}", expected)
        if nonempty and not v.strip():
            r.fail(node, field, "must not be empty", expected)
        return v
    return parse


def _ident(r: _Reader, node: Node, field: str) -> str:
    expected = "an id: a letter or digit, then up to 127 letters, digits, '_', '.' or '-'"
    v = r.scalar(node, field, expected)
    if not isinstance(v, str):
        r.fail(node, field, f"got {_describe(v)}; ids are strings, put it in quotes", expected)
    if not v:
        r.fail(node, field, "empty id", expected)
    if not ID_PATTERN.fullmatch(v):
        r.fail(node, field, f"invalid id {_short(v)!r}", expected)
    return v


def _integer(lo: int, hi: int, expected: str, check: Optional[Callable[[int], bool]] = None) -> Parser:
    def parse(r: _Reader, node: Node, field: str) -> int:
        v = r.scalar(node, field, expected)
        if isinstance(v, bool) or not isinstance(v, int):
            r.fail(node, field, f"got {_describe(v)}", expected)
        if not lo <= v <= hi or (check is not None and not check(v)):
            r.fail(node, field, f"{v} is not allowed", expected)
        return v
    return parse


def _number(lo: float, hi: float, expected: str, lo_open: bool = False) -> Parser:
    def parse(r: _Reader, node: Node, field: str) -> float:
        v = r.scalar(node, field, expected)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            r.fail(node, field, f"got {_describe(v)}", expected)
        v = float(v)
        if not math.isfinite(v):
            r.fail(node, field, f"{v} is not a finite number", expected)
        if v < lo or v > hi or (lo_open and v == lo):
            r.fail(node, field, f"{v:g} is out of range", expected)
        return v
    return parse


def _file(r: _Reader, node: Node, field: str) -> str:
    expected = "the path of an existing file, absolute or relative to the story file's folder"
    v = _string(nonempty=True)(r, node, field)
    full = Path(os.path.normpath(r.base_dir / v))
    if not full.is_file():
        r.fail(node, field, f"file not found: {full}" if not full.exists() else f"not a file: {full}", expected)
    return str(full)


def file_sha(path: Optional[str]) -> Optional[str]:
    """A fingerprint of a (reference image) file's bytes, so that a reload notices a file replaced in place."""
    if not path:
        return None
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _setting(kind: type, s: Setting) -> Parser:
    """The parser of a generation setting, from its declaration in :class:`storygraph.domain.GenerationDefaults`."""
    if kind is str:
        return _string()
    if kind is int:
        return _integer(int(s.lo), int(s.hi), s.expected, s.allows)
    return _number(s.lo, s.hi, s.expected)


_GAP = _number(0, math.inf, "a story-time gap >= 0")
_TAU = _number(0, math.inf, "a time constant > 0", lo_open=True)
_STRENGTH = _number(0, 1, "a strength from 0 to 1")
_FRAME_INDEX = _integer(0, 1024, "a frame index from 0 to frames - 1")


def _memory_mode(r: _Reader, node: Node, field: str) -> str:
    expected = _one_of(list(MEMORY_MODES))
    v = _string(nonempty=True)(r, node, field)
    if v not in MEMORY_MODES:
        r.fail(node, field, f"unknown memory mode {v!r}{_did_you_mean(v, list(MEMORY_MODES))}", expected)
    return v


def _id_list(r: _Reader, node: Node, field: str) -> list[tuple[str, Node]]:
    return r.sequence(node, field, lambda rr, n, f: (_ident(rr, n, f), n), "a list of ids")


def _sub(spec: dict[str, _F], what: str) -> Parser:
    return lambda r, node, field: r.mapping(node, field, spec, what)


def _list_of(spec: dict[str, _F], what: str) -> Parser:
    item = _sub(spec, what)
    return lambda r, node, field: r.sequence(node, field, item, f"a list of {what}s")


_GENERATION = {name: _F(_setting(kind, s)) for name, kind, s in generation_settings()}
_STORY = {"id": _F(_ident, True), "title": _F(_string())}
_CHARACTER = {
    "id": _F(_ident, True), "name": _F(_string(True), True), "description": _F(_string(True), True),
    "reference": _F(_file), "decay_tau": _F(_TAU),
}
_ENVIRONMENT = {
    "id": _F(_ident, True), "description": _F(_string(True), True), "name": _F(_string()),
    "reference": _F(_file),
}
_REFERENCE = {
    "path": _F(_file, True), "kind": _F(_string(True)), "character": _F(_ident),
    "frame_index": _F(_FRAME_INDEX), "strength": _F(_STRENGTH),
}
_SCENE = {
    "id": _F(_ident, True), "action": _F(_string(True), True), "characters": _F(_id_list),
    "environment": _F(_ident), "title": _F(_string()), "lighting": _F(_string()), "weather": _F(_string()),
    "camera": _F(_string()), **_GENERATION, "references": _F(_list_of(_REFERENCE, "reference mapping")),
    "memory": _F(_memory_mode),
}
_TRANSITION = {
    "from": _F(_ident, True), "to": _F(_ident, True), "kind": _F(_string(True), True), "gap": _F(_GAP),
}
_TOP = {
    "story": _F(_sub(_STORY, "a mapping {id, title}"), True),
    "defaults": _F(_sub(_GENERATION, "a mapping of generation defaults")),
    "characters": _F(_list_of(_CHARACTER, "character mapping")),
    "environments": _F(_list_of(_ENVIRONMENT, "environment mapping")),
    "scenes": _F(_list_of(_SCENE, "scene mapping"), True),
    "transitions": _F(_list_of(_TRANSITION, "transition mapping")),
}
_TOP_WHAT = "a mapping with keys " + ", ".join(_TOP)


# ----------------------------------------------------------------------------------------------
# Loading


def _read_text(shown: str, path: Path, max_bytes: int) -> str:
    def fail(message: str, expected: str, line: Optional[int] = None) -> NoReturn:
        raise StoryFileError(shown, line, "", message, expected)

    expected = "a readable YAML story file"
    try:
        st = path.stat()
    except FileNotFoundError:
        fail("no such file", expected)
    except OSError as e:
        fail(f"cannot read: {e.strerror or e}", expected)
    if not path.is_file():
        fail("not a regular file", expected)
    if st.st_size > max_bytes:
        fail(f"the file is {st.st_size} bytes, over the limit of {max_bytes}", f"a story file of at most {max_bytes} bytes")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        fail(f"cannot read: {e.strerror or e}", expected)
    if len(data) > max_bytes:
        fail(f"the file is over the limit of {max_bytes} bytes", f"a story file of at most {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})", "UTF-8 text",
             data[: e.start].count(b"\n") + 1)
    return text[1:] if text.startswith("\ufeff") else text


def _yaml_error(shown: str, e: yaml.YAMLError) -> StoryFileError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context = f"{context} at line {context_mark.line + 1}"
    parts = [p for p in (context, getattr(e, "problem", None)) if p]
    detail = ": ".join(parts) if parts else str(e).splitlines()[0]
    return StoryFileError(shown, mark.line + 1 if mark else None, "", f"invalid YAML: {detail}",
                          "well-formed YAML", mark.column + 1 if mark else None)


def _compose(shown: str, text: str) -> Optional[Node]:
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _MAX_DEPTH:
                    m = event.start_mark
                    raise StoryFileError(shown, m.line + 1, "", f"nesting deeper than {_MAX_DEPTH} levels",
                                         "a story file (five levels deep at most)", m.column + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise _yaml_error(shown, e) from None


def load_story(path: Union[str, os.PathLike], *, max_bytes: int = MAX_FILE_BYTES) -> Story:
    """Read and check a story file; raise :class:`StoryFileError` on the first problem found.

    Reference paths come back absolute (resolved against the story file's folder).
    """
    shown = os.fspath(path)
    p = Path(shown)
    text = _read_text(shown, p, max_bytes)
    root = _compose(shown, text)
    if root is None:
        raise StoryFileError(shown, 1, "", "the file holds no YAML document", _TOP_WHAT)
    reader = _Reader(shown, Path(os.path.abspath(shown)).parent)
    top = reader.mapping(root, "", _TOP, _TOP_WHAT)
    return _build(reader, top, os.path.abspath(shown))


class _Ids:
    """Ids are unique across characters, environments and scenes, ignoring case (they name folders)."""

    def __init__(self, reader: _Reader):
        self.reader = reader
        self.seen: dict[str, tuple[str, str, Optional[int]]] = {}

    def add(self, ident: str, kind: str, rec: _Rec) -> None:
        prior = self.seen.get(ident.lower())
        if prior is not None:
            pid, pkind, pline = prior
            same = "" if pid == ident else f" ({pid!r} differs only in case)"
            self.reader.fail(rec.nodes["id"], rec.sub("id"),
                             f"duplicate id {ident!r}: already used by {pkind} {pid!r} at line {pline}{same}",
                             "an id unique across characters, environments and scenes")
        self.seen[ident.lower()] = (ident, kind, rec.line("id"))


def _build(r: _Reader, top: _Rec, source_path: str) -> Story:
    story = top.get("story")
    defaults = GenerationDefaults(**top.get("defaults", _Rec(top.node, "")).values)
    ids = _Ids(r)

    characters: list[Character] = []
    for rec in top.get("characters", []):
        ids.add(rec.get("id"), "character", rec)
        characters.append(Character(
            id=rec.get("id"), name=rec.get("name"), description=rec.get("description"),
            reference_path=rec.get("reference"), decay_tau=rec.get("decay_tau"),
            reference_sha=file_sha(rec.get("reference")),
        ))
    environments: list[Environment] = []
    for rec in top.get("environments", []):
        ids.add(rec.get("id"), "environment", rec)
        environments.append(Environment(
            id=rec.get("id"), description=rec.get("description"), name=rec.get("name", ""),
            reference_path=rec.get("reference"), reference_sha=file_sha(rec.get("reference")),
        ))
    char_ids = [c.id for c in characters]
    env_ids = [e.id for e in environments]

    scene_recs: list[_Rec] = top.get("scenes")
    if not scene_recs:
        r.fail(top.nodes["scenes"], "scenes", "no scenes", "a list of at least one scene")
    scenes: list[SceneSpec] = []
    for rec in scene_recs:
        ids.add(rec.get("id"), "scene", rec)
        scenes.append(_scene(r, rec, char_ids, env_ids, defaults))
    scene_ids = [s.id for s in scenes]

    transitions = _transitions(r, top, scene_ids)
    into = {t.to_id: t.kind for t in transitions}
    for rec, spec in zip(scene_recs, scenes):
        if spec.memory == "extend" and into.get(spec.id) != "continuous":
            came = f"a {into[spec.id]} transition" if spec.id in into else "no transition (it opens a timeline)"
            r.fail(rec.nodes["memory"], rec.sub("memory"),
                   f"memory mode extend continues the parent's last frames, but this scene follows {came}",
                   "extend only on a scene entered by a continuous transition; else one of: context, reference, "
                   "keyframe")
    return Story(
        id=story.get("id"), title=story.get("title", story.get("id")),
        characters=tuple(characters), environments=tuple(environments), scenes=tuple(scenes),
        transitions=tuple(transitions), defaults=defaults, source_path=source_path,
    )


def _check_known(r: _Reader, ident: str, node: Node, field: str, what: str, known: list[str],
                 known_set: Optional[set] = None) -> None:
    if ident not in (known_set if known_set is not None else known):
        r.fail(node, field, f"unknown {what} {ident!r}{_did_you_mean(ident, known)}", _one_of(known))


def _scene(r: _Reader, rec: _Rec, char_ids: list[str], env_ids: list[str],
           defaults: GenerationDefaults) -> SceneSpec:
    cast: list[str] = []
    for i, (cid, node) in enumerate(rec.get("characters", [])):
        field = f"{rec.sub('characters')}[{i}]"
        _check_known(r, cid, node, field, "character", char_ids)
        if cid in cast:
            r.fail(node, field, f"character {cid!r} is listed twice", "each character once per scene")
        cast.append(cid)
    env = rec.get("environment")
    if env is not None:
        _check_known(r, env, rec.nodes["environment"], rec.sub("environment"), "environment", env_ids)

    frames = rec.get("frames", defaults.frames)
    references: list[Reference] = []
    for ref in rec.get("references", []):
        kind = ref.get("kind", "character")
        if kind not in REFERENCE_KINDS:
            r.fail(ref.nodes["kind"], ref.sub("kind"),
                   f"unknown reference kind {kind!r}{_did_you_mean(kind, list(REFERENCE_KINDS))}",
                   _one_of(list(REFERENCE_KINDS)))
        who = ref.get("character")
        if kind in ("character", "costume"):
            if who is None:
                r.fail(ref.node, ref.sub("character"), f"a {kind} reference needs the character it shows",
                       "one of the scene's characters: " + (", ".join(cast) or "(none)"))
            if who not in cast:
                r.fail(ref.nodes["character"], ref.sub("character"),
                       f"character {who!r} is not in this scene", _one_of(cast))
        elif who is not None:
            r.fail(ref.nodes["character"], ref.sub("character"),
                   f"a {kind} reference names no character", "no 'character' key for kinds place and frame")
        index = ref.get("frame_index", 0)
        if index >= frames:
            r.fail(ref.nodes["frame_index"], ref.sub("frame_index"),
                   f"frame {index} is past the scene's {frames} frames", f"a frame index from 0 to {frames - 1}")
        references.append(Reference(path=ref.get("path"), kind=kind, character=who, frame_index=index,
                                    strength=ref.get("strength", 1.0), sha=file_sha(ref.get("path"))))

    gen = {k: rec.get(k) for k in _GENERATION}
    return SceneSpec(
        id=rec.get("id"), action=rec.get("action"), characters=tuple(cast), environment=env,
        title=rec.get("title", ""), lighting=rec.get("lighting", ""), weather=rec.get("weather", ""),
        camera=rec.get("camera", ""), references=tuple(references), memory=rec.get("memory"), **gen,
    )


def _transitions(r: _Reader, top: _Rec, scene_ids: list[str]) -> list[Transition]:
    recs: list[_Rec] = top.get("transitions", [])
    known = set(scene_ids)
    out: list[Transition] = []
    incoming: dict[str, _Rec] = {}
    for rec in recs:
        src, dst, kind = rec.get("from"), rec.get("to"), rec.get("kind")
        _check_known(r, src, rec.nodes["from"], rec.sub("from"), "scene", scene_ids, known)
        _check_known(r, dst, rec.nodes["to"], rec.sub("to"), "scene", scene_ids, known)
        if kind not in TRANSITION_KINDS:
            r.fail(rec.nodes["kind"], rec.sub("kind"),
                   f"unknown transition kind {kind!r}{_did_you_mean(kind, list(TRANSITION_KINDS))}",
                   _one_of(list(TRANSITION_KINDS)))
        if src == dst:
            r.fail(rec.node, rec.field, f"a transition from scene {src!r} to itself", "a transition to another scene")
        if dst in incoming:
            first = incoming[dst]
            r.fail(rec.node, rec.field,
                   f"scene {dst!r} already has an incoming transition (from {first.get('from')!r} at line "
                   f"{first.line()})", "at most one transition into each scene: timelines branch but never merge")
        incoming[dst] = rec
        out.append(Transition(from_id=src, to_id=dst, kind=kind, gap=rec.get("gap")))

    cycle = find_cycle(scene_ids, out)
    if cycle:
        edges = set(zip(cycle, cycle[1:]))
        last = max(i for i, t in enumerate(out) if (t.from_id, t.to_id) in edges)
        r.fail(recs[last].node, recs[last].field, "transitions form a cycle: " + " -> ".join(cycle),
               "transitions that move forward in story time (timelines branch but never loop)")
    try:
        place_scenes(scene_ids, out)
    except TimelineError as e:  # every case is caught above; kept so no timeline problem slips through
        r.fail(top.nodes.get("transitions", top.node), "transitions", str(e), "a forest of timelines")
    return out
