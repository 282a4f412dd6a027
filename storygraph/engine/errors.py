"""What the engine refuses, by kind (see :mod:`storygraph.errors`): a scene that is not there or is there
already, a scene whose parent is not generated yet, a story another generation holds, a deletion that would strand
generated scenes, a request it cannot take, an index it could not save."""

from __future__ import annotations

from ..errors import Conflict, InvalidInput, NotFound, StorygraphError, Unavailable


class EngineError(StorygraphError, RuntimeError):
    """The engine cannot do what was asked."""


class SceneNotFound(EngineError, NotFound):
    """No scene (or parent scene) of that id."""


class SceneExists(EngineError, Conflict):
    """A scene of that id exists already."""


class NotReady(EngineError, Conflict):
    """The scene follows one that is not generated yet."""


class GenerationBusy(EngineError, Conflict):
    """Another generation holds the story: in this process (one worker at a time) or in another one."""


class SceneHasChildren(EngineError, Conflict):
    """Deleting the scene would leave generated scenes without the scene they were made after."""


class InvalidRequest(EngineError, InvalidInput):
    """Arguments the engine cannot take (an unknown scene field, fewer than one take)."""


class IndexNotSaved(EngineError, Unavailable):
    """The vector index could not be written (a full or unwritable disk). Nothing is lost: the graph holds every
    embedding, and the next open indexes what the saved files lack."""
