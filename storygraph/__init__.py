"""storygraph: a story engine for LTX-2 video generation whose memory is a graph database.

Public API: ``StoryEngine`` (the loop), ``load_story`` (story files), ``open_store`` (the graph), ``Config`` and the
domain types. Names are imported on first use, so ``import storygraph`` (and the CLI) stays light.
"""

__version__ = "0.1.0"

_LAZY = {
    "StoryEngine": ("storygraph.engine.engine", "StoryEngine"),
    "EngineError": ("storygraph.engine.engine", "EngineError"),
    "StorygraphError": ("storygraph.errors", "StorygraphError"),
    "load_story": ("storygraph.storyfile", "load_story"),
    "StoryFileError": ("storygraph.storyfile", "StoryFileError"),
    "open_store": ("storygraph.graphdb", "open_store"),
    "Config": ("storygraph.config", "Config"),
    "Character": ("storygraph.domain", "Character"),
    "Environment": ("storygraph.domain", "Environment"),
    "SceneSpec": ("storygraph.domain", "SceneSpec"),
    "Transition": ("storygraph.domain", "Transition"),
    "Reference": ("storygraph.domain", "Reference"),
    "Story": ("storygraph.domain", "Story"),
    "MemoryParams": ("storygraph.domain", "MemoryParams"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'storygraph' has no attribute {name!r}")
