"""The viewer's guards: loopback binding, the start-up token, same-origin checks and safe media paths.

Every state-changing request (any method but GET, HEAD and OPTIONS) must carry the token printed at
start in the ``X-Storygraph-Token`` header, come from this origin (``Origin`` / ``Sec-Fetch-Site``) and
send JSON. Every request must name an allowed ``Host`` (loopback names by default), which keeps a DNS
rebinding page from reading the viewer. Media are served only from the story's ``media/`` folder.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Iterable, Optional

from ..errors import NotFound, Refused

TOKEN_HEADER = "X-Storygraph-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Host names a loopback-bound viewer answers to.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class MediaPathRefused(Refused):
    """A media path that would leave the media folder, or names something hidden."""


class MediaNotFound(NotFound):
    """A well-formed media path that names no plain file."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_matches(expected: str, given: Optional[str]) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for ``0.0.0.0``, ``::`` and names."""
    h = (host or "").strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header: ``[::1]:8765`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    h = (host_header or "").strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    if h.count(":") == 1:
        return h.split(":", 1)[0]
    return h


def host_allowed(host_header: str, allowed: Optional[Iterable[str]]) -> bool:
    if allowed is None:
        return True
    name = host_name(host_header)
    allowed_set = {a.strip("[]").lower() for a in allowed}
    return name in allowed_set


def cross_origin_reason(headers, scheme: str, host: str) -> Optional[str]:
    """Why a request is not same-origin, or None when it is (or comes from a non-browser client).

    Browsers send ``Sec-Fetch-Site`` and, on POST, ``Origin``; a client that sends neither (curl, a
    script) is not a cross-site page, and the token still guards it.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("Origin")
    if origin is not None:
        expected = f"{scheme}://{host}".lower()
        if origin.strip().lower() != expected:
            return f"cross-origin request refused (Origin {origin!r} is not {expected!r})"
    return None


def safe_media_path(root: os.PathLike, subpath: str) -> Path:
    """The file ``subpath`` names inside ``root``; :class:`MediaPathRefused` or :class:`MediaNotFound` if none.

    Refuses absolute paths, drive letters, backslashes, NUL, empty, ``.`` and ``..`` components, hidden
    names, and any path whose real location (symlinks resolved) is outside the real ``root``. ``subpath``
    is the already percent-decoded URL path, so ``%2e%2e%2f`` arrives here as ``../`` and is refused.
    """
    if not subpath or "\x00" in subpath or "\\" in subpath:
        raise MediaPathRefused("bad media path")
    if subpath.startswith("/") or (len(subpath) > 1 and subpath[1] == ":"):
        raise MediaPathRefused("absolute media paths are refused")
    parts = subpath.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise MediaPathRefused("media paths may not contain empty, '.' or '..' parts")
        if part.startswith("."):
            raise MediaPathRefused("hidden files are not served")
    root_real = Path(os.path.realpath(root))
    candidate = root_real.joinpath(*parts)
    real = Path(os.path.realpath(candidate))
    try:
        real.relative_to(root_real)
    except ValueError:
        raise MediaPathRefused("media path leads outside the media folder") from None
    if real == root_real:
        raise MediaPathRefused("not a file")
    if not real.exists():
        raise MediaNotFound("no such media file")
    if not real.is_file():
        raise MediaNotFound("not a file")
    return real
