"""Media paths as the graph stores them: relative to the story folder, so a story folder can be moved or copied.

A take's files live under ``<story dir>/media/<scene id>/take-<n>/``. The graph keeps ``media/<scene id>/take-<n>/…``
and every reader resolves it against the folder it opened, so ``mv story story2`` or ``cp -r story story2`` leaves a
story that reads its own files only. Stories written before paths were relative hold absolute paths; a path that
follows the media layout is re-rooted on its ``media/<scene>/take-<n>`` tail (:func:`relative`), which is how such
stories are migrated when they are opened.

Pure path arithmetic: no database, no models; :func:`resolve` is the only place that asks the file system anything.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

MEDIA_DIR = "media"
TAKE_PREFIX = "take-"


def _media_tail(path: str) -> Optional[str]:
    """``media/<scene>/take-<n>/…`` of a path that follows the media layout, else None (the last such match)."""
    parts = PurePosixPath(str(path).replace(os.sep, "/")).parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i] == MEDIA_DIR and parts[i + 2].startswith(TAKE_PREFIX):
            return "/".join(parts[i:])
    return None


def relative(story_dir: Optional[PathLike], path: Optional[str]) -> Optional[str]:
    """The form the graph stores: ``path`` relative to the story folder (with ``/``), when it lies inside it or
    follows the media layout; any other path (an image outside the story) as given. Empty stays empty."""
    if not path:
        return path
    p = str(path)
    if not os.path.isabs(p):
        return p.replace(os.sep, "/")
    if story_dir is not None:
        root = os.path.abspath(story_dir)
        for base in dict.fromkeys((root, os.path.realpath(root))):
            rel = os.path.relpath(os.path.abspath(p), base)
            if not (rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel)):
                return rel.replace(os.sep, "/")
    return _media_tail(p) or p


def is_migratable(story_dir: Optional[PathLike], path: Optional[str]) -> bool:
    """Whether ``path`` is absolute but would be stored relative (an old story's path, or a folder moved since)."""
    return bool(path) and os.path.isabs(str(path)) and relative(story_dir, path) != str(path)


def resolve(story_dir: Optional[PathLike], path: Optional[str]) -> Optional[Path]:
    """The file a stored path names for the story in ``story_dir``: relative paths against the folder; an absolute
    one as it is when it exists, else re-rooted on its media tail (an old story moved or copied)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        return (Path(story_dir) / p) if story_dir is not None else p
    if p.exists() or story_dir is None:
        return p
    tail = _media_tail(str(p))
    return Path(story_dir) / tail if tail else p


def exists(story_dir: Optional[PathLike], path: Optional[str]) -> bool:
    """Whether the file a stored path names is there."""
    full = resolve(story_dir, path)
    return full is not None and full.is_file()
