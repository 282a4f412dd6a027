"""``storygraph demo``: a story end to end with the embedded database and tiny random-weight models.

A smoke run: it proves that every part runs together (graph, retrieval, conditioning in every memory mode,
generation through diffusers' real LTX-2 pipelines, observation, commits, provenance) on a laptop CPU. The models
are built on the spot from configs with random weights, so the pictures are noise and the scores say nothing
about quality.

The story is the example one, or the user's own (``demo --story FILE``, ``run --tiny``): every scene is made at
``DEMO_DEFAULTS``, the smallest size the story file rules allow (so a story checked by ``validate`` at its real
size runs here in seconds per scene). The example story names no reference images; the demo draws a small
stand-in for two of its characters (a figure in the colours of their description) so that the run also shows a
reference image used as memory from the character's first scene. ``ltx_version`` picks the tiny checkpoint's
generation (2.0, 2.3 or 2.5); with ``ic_lora`` a tiny random IC-LoRA is built as well and cuts go in as reference
sheets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import Config, EngineConfig, ModelsConfig
from ..domain import GenerationDefaults, Story

#: Generation size for the tiny models: the smallest the story file rules take (64x64, one latent chunk in time;
#: two latent pixels a side, so a half-size memory is one).
DEMO_DEFAULTS = GenerationDefaults(width=64, height=64, frames=9, fps=8.0, steps=2, guidance=1.0, seed=7)
DEMO_VERSION = "2.3"
SMOKE_NOTE = ("smoke run: tiny models with random weights — the pictures are noise and the scores say nothing "
              "about quality")

#: Stand-in reference images the demo draws: character id -> (background, coat, hair or cap) colours.
STAND_INS = {"mara": ((20, 30, 60), (230, 200, 40), (180, 80, 30)),
             "tomas": ((40, 40, 40), (30, 40, 90), (70, 120, 60))}


def example_story_path() -> Path:
    """The example story: ``examples/harbor.yaml`` in a source checkout, the packaged copy otherwise."""
    here = Path(__file__).resolve().parent.parent
    for p in (here.parent / "examples" / "harbor.yaml", here / "examples" / "harbor.yaml"):
        if p.is_file():
            return p
    raise FileNotFoundError("the example story harbor.yaml is not installed")


def draw_stand_in(path, colours, size: int = 96) -> Path:
    """A simple figure (head, hair, coat) on a plain background, saved as PNG: a stand-in reference image."""
    from PIL import Image, ImageDraw

    bg, coat, hair = colours
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    s = size / 96
    d.rectangle([28 * s, 52 * s, 68 * s, 96 * s], fill=coat)
    d.ellipse([34 * s, 16 * s, 62 * s, 50 * s], fill=(230, 190, 160))
    d.pieslice([32 * s, 12 * s, 64 * s, 40 * s], 180, 360, fill=hair)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def demo_story(story: Story, defaults: GenerationDefaults = DEMO_DEFAULTS, refs_dir=None) -> Story:
    """The story at the tiny models' size: per-scene sizes and steps give way to ``defaults``; seeds stay. With
    ``refs_dir``, the characters of :data:`STAND_INS` that have no reference get a stand-in image drawn there."""
    scenes = tuple(replace(s, width=None, height=None, frames=None, fps=None, steps=None, guidance=None)
                   for s in story.scenes)
    characters = story.characters
    if refs_dir is not None:
        characters = tuple(
            replace(c, reference_path=str(draw_stand_in(Path(refs_dir) / f"{c.id}.png", STAND_INS[c.id]).resolve()))
            if c.id in STAND_INS and not c.reference_path else c for c in story.characters)
    return replace(story, scenes=scenes, characters=characters,
                   defaults=replace(defaults, negative_prompt=story.defaults.negative_prompt,
                                    seed=story.defaults.seed))


def prepare(story_dir, ltx_version: str = DEMO_VERSION, ic_lora: bool = False, save: bool = True,
            quiet: bool = True) -> Config:
    """Build the tiny models under ``<story_dir>/models`` (kept when there) and return a config that uses them;
    with ``save``, also write it as the folder's storygraph.toml; with ``quiet``, without the libraries' output."""
    from .quiet import quiet_libraries
    from .tiny.encoders import make_encoders
    from .tiny.ltx2 import make_ic_lora, make_ltx2

    if quiet:
        quiet_libraries()  # a smoke run's output is the story, not loader bars

    d = Path(story_dir)
    models = d / "models"
    enc = make_encoders(models)
    ltx = models / f"ltx-{ltx_version}"
    if not (ltx / "model_index.json").exists():
        make_ltx2(ltx, with_upsampler=False, version=ltx_version)
    lora = ""
    if ic_lora:
        lora = str(make_ic_lora(ltx, models / "ic-lora"))
    config = Config(
        models=ModelsConfig(clip=enc["clip"], dino=enc["dino"], ltx2=str(ltx), device="cpu", ic_lora=lora),
        engine=EngineConfig(observe_frames=4),
    )
    if save:
        config.save(d)
    return config
