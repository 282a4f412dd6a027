"""``storygraph demo``: a story end to end with the embedded database and tiny random-weight models.

A smoke run: it proves that every part runs together (graph, retrieval, conditioning, generation through
diffusers' real LTX-2 pipeline, observation, commits, provenance) on a laptop CPU. The models are built on the
spot from configs with random weights, so the pictures are noise and the scores say nothing about quality.

The story is the example one, or the user's own (``demo --story FILE``, ``run --tiny``): every scene is made at
``DEMO_DEFAULTS``, the smallest size the story file rules allow (so a story checked by ``validate`` at its real
size runs here in seconds per scene).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import Config, EngineConfig, ModelsConfig
from ..domain import GenerationDefaults, Story

#: Generation size for the tiny models: the smallest the story file rules take (64x64, one latent chunk in time).
DEMO_DEFAULTS = GenerationDefaults(width=64, height=64, frames=9, fps=8.0, steps=2, guidance=1.0, seed=7)
SMOKE_NOTE = ("smoke run: tiny models with random weights — the pictures are noise and the scores say nothing "
              "about quality")


def example_story_path() -> Path:
    """The example story: ``examples/harbor.yaml`` in a source checkout, the packaged copy otherwise."""
    here = Path(__file__).resolve().parent.parent
    for p in (here.parent / "examples" / "harbor.yaml", here / "examples" / "harbor.yaml"):
        if p.is_file():
            return p
    raise FileNotFoundError("the example story harbor.yaml is not installed")


def demo_story(story: Story, defaults: GenerationDefaults = DEMO_DEFAULTS) -> Story:
    """The story at the tiny models' size: per-scene sizes and steps give way to ``defaults``; seeds stay."""
    scenes = tuple(replace(s, width=None, height=None, frames=None, fps=None, steps=None, guidance=None)
                   for s in story.scenes)
    return replace(story, scenes=scenes, defaults=replace(defaults, negative_prompt=story.defaults.negative_prompt,
                                                          seed=story.defaults.seed))


def prepare(story_dir, save: bool = True, quiet: bool = True) -> Config:
    """Build the tiny models under ``<story_dir>/models`` (kept when there) and return a config that uses them;
    with ``save``, also write it as the folder's storygraph.toml; with ``quiet``, without the libraries' output."""
    from .quiet import quiet_libraries
    from .tiny.encoders import make_encoders
    from .tiny.ltx2 import make_ltx2

    if quiet:
        quiet_libraries()  # a smoke run's output is the story, not loader bars

    d = Path(story_dir)
    models = d / "models"
    enc = make_encoders(models)
    ltx = models / "ltx2"
    if not (ltx / "model_index.json").exists():
        make_ltx2(ltx, with_upsampler=False)
    config = Config(
        models=ModelsConfig(clip=enc["clip"], dino=enc["dino"], ltx2=str(ltx), device="cpu"),
        engine=EngineConfig(observe_frames=4),
    )
    if save:
        config.save(d)
    return config
