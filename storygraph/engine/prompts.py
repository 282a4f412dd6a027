"""Prompt builder: motion first, then the actors' visuals, environment, lighting and weather, then camera.

LTX-2 follows prompts that lead with the action and keep one flowing paragraph, so each part is one or two
sentences in that order. The template (``[engine] prompt_template``) names the parts it uses:
``{motion} {actors} {environment} {lighting} {camera}``.
"""

from __future__ import annotations

import string
from typing import Optional, Sequence

from ..domain import Character, Environment, SceneSpec

PARTS = ("motion", "actors", "environment", "lighting", "camera")
DEFAULT_TEMPLATE = "{motion} {actors} {environment} {lighting} {camera}"


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def prompt_parts(spec: SceneSpec, characters: Sequence[Character], environment: Optional[Environment]) -> dict:
    by_id = {c.id: c for c in characters}
    cast = [by_id[c] for c in spec.characters if c in by_id]
    actors = " ".join(_sentence(f"{c.name}: {c.description}" if c.description else c.name) for c in cast)
    env = _sentence(environment.description) if environment is not None else ""
    light = " ".join(p for p in (_sentence(spec.lighting), _sentence(spec.weather)) if p)
    return {"motion": _sentence(spec.action), "actors": actors, "environment": env, "lighting": light,
            "camera": _sentence(spec.camera)}


def build_prompt(spec: SceneSpec, characters: Sequence[Character], environment: Optional[Environment],
                 template: str = DEFAULT_TEMPLATE) -> str:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = fields - set(PARTS)
    if unknown:
        raise ValueError(f"prompt template names unknown part(s) {sorted(unknown)}; known: {', '.join(PARTS)}")
    return " ".join(template.format(**prompt_parts(spec, characters, environment)).split())


def retrieval_text(spec: SceneSpec, character: Character, environment: Optional[Environment]) -> str:
    """The CLIP text query for one character's memory: who, doing what, where."""
    who = f"{character.name}, {character.description}" if character.description else character.name
    where = environment.description if environment is not None else ""
    return " ".join(p for p in (_sentence(who), _sentence(spec.action), _sentence(where)) if p)
