"""The story rules (:mod:`storygraph.rules`) applied to edits of a stored story.

Before the engine writes a story, a character, an environment, a scene or a transition, it checks it here
against what the graph already holds: the same schemas and cross-record rules as a story file, with the same
messages, located by field path (``characters[0]``; the viewer's API turns it into the JSON pointer of its
request body, ``/characters/0``). Everything is checked before anything is written, so a refused edit leaves
the graph as it was.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ..config import Config
from ..domain import MAX_CLOCK, Character, Environment, Placement, Reference, SceneSpec, Story, Transition
from ..graphdb import SceneRecord, StoryStore
from ..rules import (
    CHARACTER, ENVIRONMENT, NEW_SCENE, SCENE_EDIT, TRANSITION, Context, Known, RuleError, character_fields,
    check_memory_mode, check_scene_links, check_story, check_transitions, did_you_mean, environment_fields, one_of, read_json,
    reference_fields, scene_fields, transition_fields,
)

#: Scene fields that are text: null means empty.
_TEXT = ("title", "action", "lighting", "weather", "camera")


class EditChecks:
    """The checks of one story's edits: ``store`` holds the story, ``story_dir`` its folder."""

    def __init__(self, store: StoryStore, story_dir: Path, config: Config):
        self.store = store
        self.dir = Path(story_dir)
        self.config = config

    # -- what the checks need from the story -------------------------------------------------------
    def context(self) -> Context:
        """Reference images resolve against the story file's folder (else the story folder) and must lie in it,
        in the story folder, or in a folder of ``[story] reference_folders``."""
        meta = self.store.story_meta() or {}
        src = meta.get("source_path")
        base = Path(src).parent if src else self.dir.resolve()
        return Context(base, (base, self.dir.resolve(), *self.config.story.reference_roots(self.dir)))

    def known(self) -> Known:
        return Known.of(self.store.ids("character"), self.store.ids("environment"), self.store.ids("scene"))

    def _frames(self, spec: SceneSpec) -> int:
        return spec.frames if spec.frames is not None else self.store.defaults().frames

    # -- the edits ---------------------------------------------------------------------------------
    def story(self, story: Story) -> None:
        """A whole story built in Python, as a story file would be checked."""
        src = story.source_path
        base = Path(src).parent if src else self.dir.resolve()
        roots = (base, self.dir.resolve(), *self.config.story.reference_roots(self.dir))
        check_story(story, ctx=Context(base, roots))

    def character(self, character: Character) -> None:
        old = next((c for c in self.store.characters() if c.id == character.id), None)
        same_image = character.reference_path is None or (old is not None and old.reference_path == character.reference_path)
        read_json(character_fields(character), CHARACTER.without("reference") if same_image else CHARACTER, (),
                  self.context())
        self.known().add(character.id, "character", (), replace_same=True)

    def environment(self, environment: Environment) -> None:
        old = next((e for e in self.store.environments() if e.id == environment.id), None)
        same_image = environment.reference_path is None or \
            (old is not None and old.reference_path == environment.reference_path)
        read_json(environment_fields(environment), ENVIRONMENT.without("reference") if same_image else ENVIRONMENT,
                  (), self.context())
        self.known().add(environment.id, "environment", (), replace_same=True)

    def new_scene(self, spec: SceneSpec, parent_id: Optional[str], kind: str, gap: Optional[float]) -> Optional[SceneRecord]:
        """A scene added after ``parent_id`` (or starting a timeline); returns the parent's record."""
        body = scene_fields(spec)
        body.update({k: v for k, v in (("parent_id", parent_id), ("kind", kind), ("gap", gap)) if v is not None})
        read_json(body, NEW_SCENE, (), self.context())
        known = self.known()
        known.add(spec.id, "scene", ())
        check_scene_links(spec, (), known, self._frames(spec))
        check_memory_mode(spec, (), kind if parent_id is not None else None)
        if parent_id is None:
            return None
        parent = self.store.scene(parent_id)
        if parent is None:
            raise RuleError(("parent_id",), f"unknown scene {parent_id!r}{did_you_mean(parent_id, known.scenes)}",
                            one_of(list(known.scenes)))
        clock = parent.clock + Transition(parent_id, spec.id, kind, gap).effective_gap
        if not clock <= MAX_CLOCK:
            raise RuleError(("gap",), f"the scene would sit at story time {clock:g}, past {MAX_CLOCK:g}",
                            f"a gap that keeps the clock at most {MAX_CLOCK:g}")
        return parent

    def scene_edit(self, scene: SceneRecord, fields: dict[str, Any]) -> SceneSpec:
        """The scene's spec with ``fields`` changed (None: empty text, no characters, the story's default)."""
        given = dict(fields)
        if isinstance(given.get("characters"), tuple):
            given["characters"] = list(given["characters"])
        if isinstance(given.get("references"), (list, tuple)):
            given["references"] = [reference_fields(r) if isinstance(r, Reference) else r for r in given["references"]]
        data = read_json(given, SCENE_EDIT, (), self.context())
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in _TEXT:
                value = value or ""
            elif key == "characters":
                value = tuple(value or ())
            elif key == "references":
                value = tuple(Reference(**{k: v for k, v in r.items() if v is not None}) for r in value or ())
            changes[key] = value
        spec = replace(scene.spec, **changes)
        check_scene_links(spec, (), self.known(), self._frames(spec))
        incoming = next((t.kind for t in self.store.transitions() if t.to_id == scene.id), None)
        check_memory_mode(spec, (), incoming)
        return spec

    def transition(self, transition: Transition) -> dict[str, Placement]:
        """A transition into ``transition.to_id`` (replacing the one it had); returns every scene's placement."""
        read_json(transition_fields(transition), TRANSITION)
        transitions = [Transition(t.from_id, t.to_id, t.kind, t.gap) for t in self.store.transitions()
                       if t.to_id != transition.to_id] + [transition]
        return check_transitions(transitions, [()] * len(transitions), self.store.ids("scene"))
