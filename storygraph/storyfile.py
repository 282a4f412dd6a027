"""Story files: YAML in, :class:`storygraph.domain.Story` out.

Every problem is a :class:`StoryFileError` naming the file, the line, the field (a dotted path such as
``scenes[3].characters[1]``, indices from 0) and what was expected. The rules themselves live in
:mod:`storygraph.rules`, shared with the Python and HTTP APIs; this module reads YAML into their input and
says where a problem is. Nothing is ever written anywhere. The format is described in docs/story-format.md.

The YAML is read from the parser's events by a small composer of our own rather than PyYAML's, so that it
behaves the same on every PyYAML version allowed (6.0.1 to 6.0.4 are tested):

- no tags but ``!!str`` (and ``!``): anything else (``!!python/...``, ``!!int "abc"``, ``!!timestamp``) is
  refused with its line, and only plain strings, numbers, booleans and nulls are ever built;
- a date (``2024-02-30``) is refused as a date rather than built (no field takes one; quote it);
- nesting is bounded (32 levels) before anything recurses, and an alias can only name a node already
  complete, so no document is recursive;
- merge keys (``<<: *base``) are resolved here with each mapping's keys once (first source wins, explicit
  keys win over merged ones), and every merged pair and every value visited through an alias counts
  against one budget proportional to the file's size, so a small file cannot make a large amount of work;
- control characters (a NUL byte, ...) are refused with their line before parsing; numbers longer than 64
  characters are refused before conversion.
"""

from __future__ import annotations

import gc
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, NoReturn, Optional, Union

import yaml
from yaml.constructor import SafeConstructor

from .domain import Character, Environment, GenerationDefaults, Reference, SceneSpec, Story, Transition
from .errors import InvalidInput
from .rules import (
    ID_PATTERN, REFERENCE_KINDS, STORY_FILE, Context, Invalid, RuleError, Tree, check_story, describe, field_path,
    read,
)

__all__ = ["StoryFileError", "load_story", "ID_PATTERN", "MAX_FILE_BYTES", "REFERENCE_KINDS", "story_from_fields"]

#: Larger story files are refused before parsing.
MAX_FILE_BYTES = 16 * 1024 * 1024

# A story file nests five levels deep; anything far deeper is hostile or broken.
_MAX_DEPTH = 32
# Values visited while reading (aliases expanded) and merged pairs, at most: this many, plus four per character
# of the file. A story file without aliases uses about one per four characters.
_BASE_BUDGET = 100_000
_BUDGET_PER_CHAR = 4
# Longer numbers are refused before conversion (Python's int() of thousands of digits is slow, then refused).
_MAX_NUMBER_CHARS = 64

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_P = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT, _TIMESTAMP, _MERGE = (
    _P + t for t in ("str", "null", "bool", "int", "float", "timestamp", "merge"))
_ALLOWED_EXPLICIT = (None, "!", _STR)
# YAML forbids these characters in a stream (the same class as PyYAML's reader; tab, LF, CR and NEL are fine).
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


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
# Composing: parser events -> a tree of small nodes


class _Node:
    """A YAML node: ``shape`` "scalar" (``value`` its text, ``tag`` resolved), "seq" (``value`` a list of
    nodes) or "map" (``value`` its own pairs, merge keys left out; ``merged`` the pairs its merge keys bring
    that its own keys do not override; ``merge_error`` a problem with a merge key, reported when read)."""

    __slots__ = ("shape", "tag", "value", "line", "column", "merged", "merge_error", "bad_tag")

    def __init__(self, shape: str, tag: Optional[str], value: Any, mark, bad_tag: Optional[str] = None):
        self.shape = shape
        self.tag = tag
        self.value = value
        self.line = mark.line + 1
        self.column = mark.column + 1
        self.merged: list = ()
        self.merge_error: Optional[tuple["_Node", str]] = None
        self.bad_tag = bad_tag

    def pairs(self) -> list:
        return self.value + list(self.merged) if self.merged else self.value


class _Budget:
    def __init__(self, limit: int):
        self.limit = limit
        self.left = limit

    def spend(self, n: int = 1) -> bool:
        self.left -= n
        return self.left >= 0

    def message(self) -> str:
        return f"the file expands to more than {self.limit} values (aliases or merge keys)"


_RESOLVER = yaml.resolver.Resolver()


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_P):] if tag.startswith(_P) else tag


class _Composer:
    def __init__(self, shown: str, text: str, budget: _Budget):
        self.shown = shown
        self.text = text
        self.budget = budget
        self.anchors: dict[str, _Node] = {}

    def fail(self, mark, message: str, expected: str) -> NoReturn:
        raise StoryFileError(self.shown, mark.line + 1, field_path(_path_at(self.text, mark.index)), message,
                             expected, mark.column + 1)

    def compose(self) -> Optional[_Node]:
        root: Optional[_Node] = None
        stack: list[list] = []  # open collections: [node, anchor, pending key node]
        documents = 0
        no_key = _NO_KEY
        resolve, anchors, Node = _RESOLVER.resolve, self.anchors, _Node
        Scalar, MapStart, SeqStart, MapEnd, SeqEnd, Alias, DocStart = (
            yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.MappingEndEvent,
            yaml.SequenceEndEvent, yaml.AliasEvent, yaml.DocumentStartEvent)
        try:
            for event in yaml.parse(self.text, Loader=_Loader):
                kind = type(event)
                if kind is Scalar:
                    tag = event.tag
                    if tag is None or tag == "!":
                        implicit = event.implicit
                        tag = resolve(yaml.ScalarNode, event.value, implicit) if implicit[0] else _STR
                        node = Node("scalar", tag, event.value, event.start_mark)
                    else:
                        node = Node("scalar", tag, event.value, event.start_mark,
                                    None if tag in _ALLOWED_EXPLICIT else tag)
                    if event.anchor is not None:
                        anchors[event.anchor] = node
                elif kind is MapStart or kind is SeqStart:
                    if len(stack) >= _MAX_DEPTH:
                        self.fail(event.start_mark, f"nesting deeper than {_MAX_DEPTH} levels",
                                  "a story file (five levels deep at most)")
                    bad = None if event.tag in (None, "!") else event.tag
                    shape = "map" if kind is MapStart else "seq"
                    stack.append([Node(shape, None, [], event.start_mark, bad), event.anchor, no_key])
                    continue
                elif kind is MapEnd or kind is SeqEnd:
                    node, anchor, _ = stack.pop()
                    if node.shape == "map":
                        self._merge(node, event.start_mark)
                    if anchor is not None:
                        anchors[anchor] = node
                elif kind is Alias:
                    node = anchors.get(event.anchor)
                    if node is None:
                        self.fail(event.start_mark, f"invalid YAML: found undefined alias {event.anchor!r}",
                                  "an alias (*name) after its anchor (&name) is complete")
                    if not self.budget.spend():
                        self.fail(event.start_mark, self.budget.message(), "a story file of sane size")
                elif kind is DocStart:
                    documents += 1
                    if documents > 1:
                        self.fail(event.start_mark, "invalid YAML: expected a single document in the stream: "
                                  "but found another document", "well-formed YAML")
                    continue
                else:
                    continue
                if not stack:
                    root = node
                    continue
                top = stack[-1]
                parent = top[0]
                if parent.shape == "seq":
                    parent.value.append(node)
                elif top[2] is no_key:
                    top[2] = node
                else:
                    parent.value.append((top[2], node))
                    top[2] = no_key
        except yaml.YAMLError as e:
            raise _yaml_error(self.shown, e, self.text) from None
        return root

    def _merge(self, node: _Node, end_mark) -> None:
        """Take a finished mapping's merge keys (``<<: *a`` or ``<<: [*a, *b]``) out of its pairs and work out
        the pairs they bring: each key once, explicit keys first, then the sources in order."""
        if not any(k.tag == _MERGE for k, _ in node.value):
            return
        own, sources = [], []
        for key, value in node.value:
            if key.shape == "scalar" and key.tag == _MERGE and key.bad_tag is None:
                if value.shape == "map":
                    sources.append(value)
                elif value.shape == "seq" and all(v.shape == "map" for v in value.value):
                    sources.extend(value.value)
                elif node.merge_error is None:
                    got = "a list holding something else" if value.shape == "seq" else "a single value"
                    node.merge_error = (value, f"bad merge key: got {got}")
            else:
                own.append((key, value))
        if not sources and node.merge_error is None:
            return
        node.value = own
        seen = {k.value for k, _ in own if k.shape == "scalar"}
        merged = []
        for src in sources:
            pairs = src.pairs()
            if not self.budget.spend(len(pairs) + 1):
                self.fail(end_mark, self.budget.message(), "a story file of sane size")
            for k, v in pairs:
                key = k.value if k.shape == "scalar" else id(k)
                if key not in seen:
                    seen.add(key)
                    merged.append((k, v))
        node.merged = merged


_NO_KEY = object()


def _path_at(text: str, pos: int) -> tuple:
    """The field path of the value at character ``pos`` of ``text`` (or of the innermost value open there): the
    events are read again up to that place. Used only to locate a problem, so it may cost a second parse."""
    stack: list[list] = []  # [shape, key or index, expecting a key]

    def path() -> tuple:
        out = []
        for shape, at, want_key in stack:
            if shape == "map" and (want_key or at is None):
                break
            out.append(at)
        return tuple(out)

    def advance() -> None:  # a value (or key) of the innermost collection is complete
        if stack:
            top = stack[-1]
            if top[0] == "seq":
                top[1] += 1
            else:
                top[2] = not top[2]

    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if ev.start_mark.index > pos:
                break
            kind = type(ev)
            if kind is yaml.ScalarEvent:
                if stack and stack[-1][0] == "map" and stack[-1][2]:
                    if pos < ev.end_mark.index:
                        return path() + (ev.value[:60],)
                    stack[-1][1] = ev.value
                    stack[-1][2] = False
                    continue
                if pos < ev.end_mark.index:
                    return path()
                advance()
            elif kind is yaml.AliasEvent:
                advance()
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if stack and stack[-1][0] == "map" and stack[-1][2]:
                    stack[-1][1], stack[-1][2] = "?", False  # a collection as a key
                stack.append(["map", None, True] if kind is yaml.MappingStartEvent else ["seq", 0, False])
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                stack.pop()
                advance()
    except yaml.YAMLError:
        pass
    return path()


def _yaml_error(shown: str, e: yaml.YAMLError, text: str) -> StoryFileError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context = f"{context} at line {context_mark.line + 1}"
    parts = [p for p in (context, getattr(e, "problem", None)) if p]
    detail = ": ".join(parts) if parts else str(e).splitlines()[0]
    field = field_path(_path_at(text, mark.index)) if mark is not None else ""
    return StoryFileError(shown, mark.line + 1 if mark else None, field, f"invalid YAML: {detail}",
                          "well-formed YAML", mark.column + 1 if mark else None)


# ----------------------------------------------------------------------------------------------
# Reading the node tree against the rules

_CONSTRUCTOR = SafeConstructor()


def _scalar(node: _Node) -> Any:
    """A plain scalar's value: str, None, bool, int or float (nothing else is ever built)."""
    tag, text = node.tag, node.value
    if tag == _STR:
        return text
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return SafeConstructor.bool_values[text.lower()]
    if tag in (_INT, _FLOAT):
        if len(text) > _MAX_NUMBER_CHARS:
            raise Invalid(f"a number written with {len(text)} characters, more than {_MAX_NUMBER_CHARS}")
        make = SafeConstructor.construct_yaml_int if tag == _INT else SafeConstructor.construct_yaml_float
        try:
            return make(_CONSTRUCTOR, yaml.ScalarNode(tag, text))
        except (ValueError, ArithmeticError, IndexError, KeyError, TypeError):
            raise Invalid(f"cannot read {text!r} as a number") from None
    if tag == _TIMESTAMP:
        raise Invalid(f"got a date ({text[:40]}); put it in quotes")
    return text  # `<<` or `=` where a value goes: the text as written


class _YamlTree(Tree):
    def __init__(self, shown: str, budget: _Budget):
        self.shown = shown
        self.budget = budget

    def fail(self, node: Any, path, message: str, expected: Optional[str] = None) -> NoReturn:
        line = node if isinstance(node, int) else node.line if isinstance(node, _Node) else None
        column = node.column if isinstance(node, _Node) else None
        raise StoryFileError(self.shown, line, field_path(path), message, expected, column)

    def count(self, node: _Node, path) -> None:
        if not self.budget.spend():
            self.fail(node, path, self.budget.message(), "a story file of sane size")
        if node.bad_tag is not None:
            self.fail(node, path, f"unsupported YAML tag {_short_tag(node.bad_tag)!r}",
                      "plain YAML values (no tags but !!str)")

    def shape(self, node: _Node) -> str:
        return node.shape

    def scalar(self, node: _Node, path) -> Any:
        return _scalar(node)

    def describe(self, node: _Node, path) -> str:
        if node.shape != "scalar":
            return "a list" if node.shape == "seq" else "a mapping"
        try:
            return describe(_scalar(node))
        except Invalid:
            return "a date" if node.tag == _TIMESTAMP else "a number"

    def items(self, node: _Node, path) -> Iterable[tuple[str, _Node, _Node]]:
        if node.merge_error is not None:
            where, message = node.merge_error
            self.fail(where, path + ("<<",), message, "`<<: *anchor` naming a mapping")
        seen: dict[str, _Node] = {}
        for key_node, _ in node.value:
            key = self._key(key_node, path)
            if key in seen:
                self.fail(key_node, path + (key,), f"duplicate key {key!r} (first at line {seen[key].line})",
                          "each key once")
            seen[key] = key_node
        for key_node, value in node.value:
            yield key_node.value, key_node, value
        for key_node, value in node.merged:
            yield self._key(key_node, path), key_node, value

    def _key(self, key_node: _Node, path) -> str:
        if key_node.bad_tag is not None:
            self.count(key_node, path)
        if key_node.shape != "scalar" or key_node.tag != _STR:
            shown = key_node.value if key_node.shape == "scalar" else "?"
            self.fail(key_node, path + (shown[:60],), f"a key must be a word, got {self.describe(key_node, path)}",
                      "a string key")
        return key_node.value

    def elements(self, node: _Node) -> list:
        return node.value

    def length(self, node: _Node) -> int:
        return len(node.value)

    def is_null(self, node: _Node) -> bool:
        return node.shape == "scalar" and node.tag == _NULL


def _locate(root: _Node, path) -> _Node:
    """The node at ``path`` (or the deepest one on the way when the path goes further than the file)."""
    node = root
    for part in path:
        nxt = None
        if isinstance(part, int) and node.shape == "seq" and part < len(node.value):
            nxt = node.value[part]
        elif isinstance(part, str) and node.shape == "map":
            nxt = next((v for k, v in node.pairs() if k.shape == "scalar" and k.value == part), None)
        if nxt is None:
            return node
        node = nxt
    return node


# ----------------------------------------------------------------------------------------------
# Loading


def _read_text(shown: str, path: Path, max_bytes: int) -> str:
    def fail(message: str, expected: str, line: Optional[int] = None, column: Optional[int] = None) -> NoReturn:
        raise StoryFileError(shown, line, "", message, expected, column)

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
             data[: e.start].count(b"\n") + 1, e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1)
    text = text[1:] if text.startswith("\ufeff") else text
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        before = text[: bad.start()]
        where = field_path(_path_at(_NON_PRINTABLE.sub(" ", text), bad.start()))
        raise StoryFileError(shown, before.count("\n") + 1, where,
                             f"a control character U+{ord(bad.group()):04X} (YAML does not allow it)",
                             "printable text (tabs and line breaks are fine)", bad.start() - (before.rfind("\n") + 1) + 1)
    return text


def load_story(path: Union[str, os.PathLike], *, max_bytes: int = MAX_FILE_BYTES,
               reference_folders: Iterable[Union[str, os.PathLike]] = ()) -> Story:
    """Read and check a story file; raise :class:`StoryFileError` on the first problem found.

    Reference images must lie in the story file's folder tree or in one of ``reference_folders`` (the
    ``[story] reference_folders`` of a story folder's ``storygraph.toml``); their paths come back absolute.
    """
    with _no_collection():
        return _load(os.fspath(path), max_bytes, reference_folders)


@contextmanager
def _no_collection():
    """Reading builds millions of small objects and no reference cycles: the cyclic collector would walk all of
    them again and again (a third of the time of a 50,000-scene file) for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(shown: str, max_bytes: int, reference_folders) -> Story:
    p = Path(shown)
    text = _read_text(shown, p, max_bytes)
    budget = _Budget(_BASE_BUDGET + _BUDGET_PER_CHAR * len(text))
    root = _Composer(shown, text, budget).compose()
    if root is None:
        raise StoryFileError(shown, 1, "", "the file holds no YAML document", STORY_FILE.expected)
    tree = _YamlTree(shown, budget)
    data = read(tree, root, STORY_FILE, (), Context.for_file(shown, reference_folders))
    story = story_from_fields(data, os.path.abspath(shown))

    def where(at) -> str:
        return f" at line {_locate(root, at).line}"

    try:
        check_story(story, where, records=False)
    except RuleError as e:
        node = _locate(root, e.path)
        raise StoryFileError(shown, node.line, e.field, e.message, e.expected, node.column) from None
    return story


def file_sha(path: Optional[str]) -> Optional[str]:
    """A fingerprint of a (reference image) file's bytes, so that a reload notices a file replaced in place."""
    if not path:
        return None
    import hashlib

    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:  # not readable now: the fingerprint is not known
        return None
    return h.hexdigest()[:16]


def story_from_fields(data: dict, source_path: Optional[str] = None) -> Story:
    """A :class:`Story` from a story file's fields as :func:`storygraph.rules.read` returns them."""
    story = data["story"]
    defaults = GenerationDefaults(**{k: v for k, v in (data.get("defaults") or {}).items() if v is not None})

    def opt(d: dict, key: str, default: Any) -> Any:
        v = d.get(key)
        return default if v is None else v

    shas: dict = {}

    def sha(path: Optional[str]) -> Optional[str]:
        """Each file is read once however many references name it (a YAML alias can repeat one a thousand times)."""
        if path not in shas:
            shas[path] = file_sha(path)
        return shas[path]

    characters = tuple(Character(id=c["id"], name=c["name"], description=c["description"],
                                 reference_path=c.get("reference"), decay_tau=c.get("decay_tau"),
                                 reference_sha=sha(c.get("reference")))
                       for c in data.get("characters") or ())
    environments = tuple(Environment(id=e["id"], description=e["description"], name=opt(e, "name", ""),
                                     reference_path=e.get("reference"), reference_sha=sha(e.get("reference")))
                         for e in data.get("environments") or ())
    scenes = []
    for s in data["scenes"]:
        references = tuple(Reference(path=r["path"], kind=opt(r, "kind", "character"), character=r.get("character"),
                                     frame_index=opt(r, "frame_index", 0), strength=opt(r, "strength", 1.0),
                                     sha=sha(r["path"]))
                           for r in s.get("references") or ())
        scenes.append(SceneSpec(
            id=s["id"], action=s["action"], characters=tuple(s.get("characters") or ()),
            environment=s.get("environment"), title=opt(s, "title", ""), lighting=opt(s, "lighting", ""),
            weather=opt(s, "weather", ""), camera=opt(s, "camera", ""), references=references, memory=s.get("memory"),
            **{k: s.get(k) for k in GenerationDefaults.__dataclass_fields__}))
    transitions = tuple(Transition(from_id=t["from"], to_id=t["to"], kind=t["kind"], gap=t.get("gap"))
                        for t in data.get("transitions") or ())
    return Story(id=story["id"], title=opt(story, "title", story["id"]), characters=characters,
                 environments=environments, scenes=tuple(scenes), transitions=transitions, defaults=defaults,
                 source_path=source_path)
