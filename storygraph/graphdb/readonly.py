"""The first of two guards on read-only Cypher: a lexical check that runs before any database sees the query.

It strips comments, string literals and backquoted names, then refuses more than one statement and any
clause keyword that writes, changes the schema, controls transactions or touches files. Each backend then
adds its own enforcement (a READ ONLY transaction on LadybugDB; ``EXPLAIN`` query type plus a read
transaction on Neo4j), so a query must pass both.
"""

from __future__ import annotations

import re

from .store import ReadOnlyViolation

# refused wherever they stand (outside strings, comments and property names)
WRITE_KEYWORDS = {
    "CREATE", "MERGE", "SET", "DELETE", "DETACH", "REMOVE", "DROP", "ALTER", "FOREACH",
    "COPY", "LOAD", "EXPORT", "IMPORT", "ATTACH", "INSTALL", "CHECKPOINT", "BEGIN", "COMMIT", "ROLLBACK",
}
# administration clauses; refused at the start of a statement only, since they are also common variable names
ADMIN_KEYWORDS = {"GRANT", "REVOKE", "DENY", "TERMINATE", "START", "STOP", "ENABLE", "RENAME", "TRUNCATE", "USE",
                  "UPDATE"}

_TOKEN = re.compile(
    r"""
    (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?(\*/|\Z))
  | (?P<string>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?)
  | (?P<quoted>`(?:[^`]|``)*`?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<semicolon>;)
  | (?P<other>\S)
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokens(cypher: str):
    for m in _TOKEN.finditer(cypher):
        kind = m.lastgroup
        if kind in ("line_comment", "block_comment"):
            continue
        yield kind, m.group(kind)


def check_read_only(cypher: str) -> None:
    """Raise ReadOnlyViolation unless ``cypher`` is one statement with no writing clause."""
    if not cypher or not cypher.strip():
        raise ReadOnlyViolation("read-only query refused: the query is empty")
    statements = 0
    in_statement = False
    recent: list[str] = []  # the last significant tokens of the current statement, upper-cased
    for kind, text in _tokens(cypher):
        if kind == "semicolon":
            in_statement = False
            recent = []
            continue
        if not in_statement:
            statements += 1
            in_statement = True
            if statements > 1:
                raise ReadOnlyViolation(
                    "read-only query refused: several statements separated by ';' — send one statement at a time")
        if kind == "word" and (not recent or recent[-1] != "."):
            word = text.upper()
            if word in WRITE_KEYWORDS or (word in ADMIN_KEYWORDS and not recent):
                raise ReadOnlyViolation(
                    f"read-only query refused: {word} writes to the graph, changes its schema or transactions, "
                    "or touches files; queries here can only read")
        # ``CALL threads = 4`` changes a database setting on LadybugDB
        if text == "=" and len(recent) >= 2 and recent[-2] == "CALL":
            raise ReadOnlyViolation("read-only query refused: CALL <option> = <value> changes a database setting")
        recent = (recent + [text.upper() if kind == "word" else text])[-2:]
    if statements == 0:
        raise ReadOnlyViolation("read-only query refused: the query is empty")
