"""Named Cypher queries: one ``.cypher`` file per query in ``storygraph/cypher``.

``cypher/<name>.cypher`` serves both backends; ``cypher/<dialect>/<name>.cypher`` (dialect ``neo4j`` or
``ladybug``) overrides it where the two differ.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CYPHER_DIR = Path(__file__).resolve().parent.parent / "cypher"
DIALECTS = ("ladybug", "neo4j")


def names() -> list[str]:
    found = {p.stem for p in CYPHER_DIR.glob("*.cypher")}
    for d in DIALECTS:
        found |= {p.stem for p in (CYPHER_DIR / d).glob("*.cypher")}
    return sorted(found)


@lru_cache(maxsize=None)
def load(name: str, dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown Cypher dialect {dialect!r}")
    for path in (CYPHER_DIR / dialect / f"{name}.cypher", CYPHER_DIR / f"{name}.cypher"):
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
    raise KeyError(f"no Cypher query named {name!r} for {dialect}")


def available(name: str, dialect: str) -> bool:
    return (CYPHER_DIR / dialect / f"{name}.cypher").is_file() or (CYPHER_DIR / f"{name}.cypher").is_file()


def all_for(dialect: str) -> dict[str, str]:
    """Every query the given backend runs, by name."""
    return {n: load(n, dialect) for n in names() if available(n, dialect)}
