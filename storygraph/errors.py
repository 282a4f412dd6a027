"""One family of errors for all of storygraph, sorted into a few kinds that say how a caller should react.

Every error storygraph raises on purpose derives from :class:`StorygraphError` through one of its kinds:

=============== =========== ========= =================================================================
kind            HTTP status CLI exit  meaning
=============== =========== ========= =================================================================
(the base)      500         1         something failed
``NotFound``    404         1         what was named does not exist
``Conflict``    409         1         it exists already, or the story's state does not allow it now
``InvalidInput`` 400        2         what was given is wrong (a story file, a field, a query, an option)
``Refused``     403         3         refused on purpose (a write through a read-only path, a media path)
``Unavailable`` 503         1         a model, a database or a lock is not there to be had right now
=============== =========== ========= =================================================================

Each module keeps its own classes (``StoreError``, ``StoryFileError``, ``EngineError``, ...) deriving from a
kind, so a caller that catches a module's error keeps working, and the two edges that turn errors into
answers (the CLI's exit code, the viewer's HTTP status) read ``exit_code`` and ``http_status`` and never
need to know the class.
"""

from __future__ import annotations


class StorygraphError(Exception):
    """Base of every error storygraph raises on purpose."""

    exit_code = 1
    http_status = 500
    #: how the CLI introduces the message ("error: ...")
    label = "error:"


class NotFound(StorygraphError):
    http_status = 404


class Conflict(StorygraphError):
    http_status = 409


class InvalidInput(StorygraphError):
    exit_code = 2
    http_status = 400


class Refused(StorygraphError):
    exit_code = 3
    http_status = 403


class Unavailable(StorygraphError):
    http_status = 503


KINDS = (NotFound, Conflict, InvalidInput, Refused, Unavailable)

__all__ = ["StorygraphError", "NotFound", "Conflict", "InvalidInput", "Refused", "Unavailable", "KINDS"]
