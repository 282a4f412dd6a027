"""The Neo4j backend, through the official ``neo4j`` driver (Bolt).

Use it when a story outgrows one machine or several viewers and engines must share it:
``--graph neo4j://host:7687`` (or ``bolt://``, ``neo4j+s://``) with ``NEO4J_USER``/``NEO4J_PASSWORD``.
Console queries are checked by the allow-list parse (``readonly.py``), then by Neo4j itself: the query type
its planner reports for an ``EXPLAIN`` (only ``r`` passes) and the operators of that plan (no LOAD CSV, no
procedure outside the catalog listings, nothing writing), then run in a read transaction with a server-side
time limit, pulling at most ``max_rows + 1`` records.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

from ..domain import MemoryParams
from . import queries
from .base import CypherStore
from .store import DuplicateRecord, GraphUnavailable, QueryError, QueryResult, ReadOnlyViolation, StoreError

NEO4J_SCHEMES = ("neo4j://", "neo4j+s://", "neo4j+ssc://", "bolt://", "bolt+s://", "bolt+ssc://")


def is_neo4j_uri(graph: str) -> bool:
    return str(graph).startswith(NEO4J_SCHEMES)


def _plain(value):
    """Driver values (nodes, temporal types) to plain Python."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "items") and hasattr(value, "element_id"):  # Node / Relationship, in LadybugDB's form
        out = {"_ID": value.element_id}
        if hasattr(value, "start_node") and hasattr(value, "type"):
            out.update(_LABEL=value.type, _SRC=value.start_node.element_id, _DST=value.end_node.element_id)
        else:
            out["_LABEL"] = next(iter(getattr(value, "labels", ()) or ()), "")
        out.update({k: _plain(v) for k, v in value.items()})
        return out
    if hasattr(value, "nodes") and hasattr(value, "relationships"):  # Path
        return {"_NODES": [_plain(n) for n in value.nodes], "_RELS": [_plain(r) for r in value.relationships]}
    if hasattr(value, "iso_format"):
        return value.iso_format()
    return value


# Plan operators a console query may not use, whatever Neo4j says of its type: file and network reads
# (LOAD CSV), procedure calls (APOC and friends can read files, call URLs or write), and anything writing.
_REFUSED_OPERATOR_WORDS = ("LoadCSV", "Procedure", "Create", "Merge", "Delete", "Set", "Remove", "Foreach",
                           "Transaction", "Load")
_ALLOWED_PROCEDURES = ("db.labels", "db.relationshipTypes", "db.propertyKeys", "db.schema.")


def _refused_operators(plan) -> set:
    """Names of refused operators anywhere in an EXPLAIN plan (a dict tree as the driver returns it)."""
    out: set = set()
    stack = [plan] if plan else []
    while stack:
        node = stack.pop()
        op = str(node.get("operatorType", "")).split("@")[0]
        details = str((node.get("args") or node.get("arguments") or {}).get("Details", ""))
        if "Procedure" in op and any(details.lstrip().startswith(p) for p in _ALLOWED_PROCEDURES):
            pass
        elif any(w in op for w in _REFUSED_OPERATOR_WORDS):
            out.add(op)
        stack.extend(node.get("children") or [])
    return out


def _wrapped(neo4j, e: Exception) -> StoreError:
    """The driver's errors as storygraph's: a broken constraint is a duplicate, a lost server is unavailable."""
    if isinstance(e, neo4j.exceptions.ConstraintError):
        return DuplicateRecord(e.message or str(e))
    if isinstance(e, (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired)):
        return GraphUnavailable(f"Neo4j is unreachable: {e}")
    if isinstance(e, neo4j.exceptions.Neo4jError):
        return StoreError(e.message or str(e))
    return StoreError(f"{type(e).__name__}: {e}")


class Neo4jStore(CypherStore):
    backend = "neo4j"
    dialect = "neo4j"

    def __init__(self, uri: str, story_id: Optional[str] = None, memory: Optional[MemoryParams] = None,
                 user: Optional[str] = None, password: Optional[str] = None, database: Optional[str] = None,
                 setup: bool = True):
        super().__init__(story_id, memory)
        import neo4j

        self._neo4j = neo4j
        user = user if user is not None else os.environ.get("NEO4J_USER", "neo4j")
        password = password if password is not None else os.environ.get("NEO4J_PASSWORD", "")
        self.uri = uri
        self.database = database or os.environ.get("NEO4J_DATABASE") or None
        self._driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
        try:
            self._driver.verify_connectivity()
        except Exception as e:
            self._driver.close()
            raise GraphUnavailable(f"cannot reach Neo4j at {uri}: {e}") from e
        if setup:
            self.setup_schema()

    def _session(self, write: bool):
        mode = self._neo4j.WRITE_ACCESS if write else self._neo4j.READ_ACCESS
        return self._driver.session(database=self.database, default_access_mode=mode)

    @contextmanager
    def _driver_errors(self):
        try:
            yield
        except (self._neo4j.exceptions.Neo4jError, self._neo4j.exceptions.DriverError) as e:
            raise _wrapped(self._neo4j, e) from e

    def setup_schema(self) -> None:
        with self._driver_errors(), self._session(write=True) as session:
            for stmt in queries.load("schema", self.dialect).split(";"):
                if stmt.strip():
                    session.run(stmt).consume()

    @contextmanager
    def _backend_transaction(self, write: bool):
        with self._driver_errors(), self._session(write) as session:
            tx = session.begin_transaction()

            def run(cypher: str, params: Optional[dict] = None) -> list[dict]:
                with self._driver_errors():
                    return [{k: _plain(v) for k, v in rec.items()} for rec in tx.run(cypher, params or {})]

            try:
                yield run
            except BaseException:
                tx.rollback()
                raise
            tx.commit()

    def _user_query(self, cypher: str, params: dict, limits) -> QueryResult:
        """The backend's own guard: Neo4j's planner must call the query read-only ('r') and its plan may hold
        no file, procedure or writing operator; then it runs in a read transaction with a server-side time
        limit, and at most ``max_rows + 1`` records are pulled."""
        neo4j = self._neo4j
        try:
            with self._session(write=False) as session:
                summary = session.run("EXPLAIN " + cypher, params).consume()
                if summary.query_type != "r":
                    raise ReadOnlyViolation(
                        f"read-only query refused: Neo4j classifies it as {summary.query_type!r}, not read-only ('r')")
                bad = _refused_operators(summary.plan)
                if bad:
                    raise ReadOnlyViolation(f"read-only query refused: its plan uses {', '.join(sorted(bad))}")

                def work(tx):
                    result = tx.run(cypher, params)
                    keys = list(result.keys())
                    rows, truncated = [], False
                    for rec in result:
                        if len(rows) == limits.max_rows:
                            truncated = True
                            break
                        rows.append([_plain(rec[k]) for k in keys])
                    return keys, rows, truncated

                cols, rows, truncated = session.execute_read(neo4j.unit_of_work(timeout=limits.timeout_s)(work))
        except ReadOnlyViolation:
            raise
        except neo4j.exceptions.Neo4jError as e:
            if "Write" in (e.code or "") or "AccessMode" in (e.code or ""):
                raise ReadOnlyViolation(f"read-only query refused: {e.message}") from e
            if "TransactionTimedOut" in (e.code or "") or "Terminated" in (e.code or ""):
                raise QueryError(f"query stopped after its time limit of {limits.timeout_s:g} s") from e
            raise QueryError(e.message or str(e)) from e
        return QueryResult(cols, rows, truncated=truncated)

    def close(self) -> None:
        if getattr(self, "_driver", None) is not None:
            self._driver.close()
            self._driver = None
