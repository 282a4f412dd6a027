"""The default backend: an embedded LadybugDB database in a folder on disk.

One process may open a database for writing; the viewer and the engine therefore share one
``EmbeddedStore`` in one process. A lock serialises this process's threads on the one connection.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from ..domain import MemoryParams
from . import queries
from .base import CypherStore
from .store import (
    DuplicateRecord, GraphUnavailable, QueryError, QueryResult, ReadOnlyViolation, RecordNotFound, StoreError,
    StoreInputError,
)


def _rows(result) -> list[dict]:
    cols = result.get_column_names()
    return [dict(zip(cols, r)) for r in result.get_all()]


def _wrapped(e: RuntimeError) -> StoreError:
    """LadybugDB reports every failure as a RuntimeError; sort the ones a caller can act on."""
    text = str(e)
    if "duplicated primary key" in text:
        return DuplicateRecord(text)
    if "lock" in text.lower():
        return GraphUnavailable(text)
    return StoreError(text)


class EmbeddedStore(CypherStore):
    backend = "ladybug"
    dialect = "ladybug"

    def __init__(self, path, story_id: Optional[str] = None, memory: Optional[MemoryParams] = None,
                 read_only: bool = False, create: bool = True):
        super().__init__(story_id, memory)
        import ladybug

        self.path = Path(path)  # the story folder; the database lives in its graph/ subfolder
        db_path = self.path / "graph"
        if not create and not db_path.exists():
            raise RecordNotFound(f"no story graph at {db_path}")
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path
        try:
            self._db = ladybug.Database(str(db_path), read_only=read_only)
        except RuntimeError as e:
            if "lock" in str(e).lower():
                raise GraphUnavailable(
                    f"{db_path} is open for writing in another process; LadybugDB allows one writer — "
                    "run the viewer and the engine in one process (storygraph studio) or use Neo4j") from e
            raise _wrapped(e) from e
        self._conn = ladybug.Connection(self._db)
        self._lock = threading.RLock()
        self._read_only = read_only
        if not read_only:
            self.setup_schema()

    def _execute(self, cypher: str, params: Optional[dict] = None):
        try:
            return self._conn.execute(cypher, params or {})
        except RuntimeError as e:
            raise _wrapped(e) from e

    def setup_schema(self) -> None:
        with self._lock:
            for stmt in queries.load("schema", self.dialect).split(";"):
                if stmt.strip():
                    self._execute(stmt)

    @contextmanager
    def _backend_transaction(self, write: bool):
        with self._lock:
            self._execute("BEGIN TRANSACTION" if write and not self._read_only else "BEGIN TRANSACTION READ ONLY")

            def run(cypher: str, params: Optional[dict] = None) -> list[dict]:
                return _rows(self._execute(cypher, params))

            try:
                yield run
            except BaseException:
                try:
                    self._conn.execute("ROLLBACK")
                except RuntimeError:
                    pass  # a failed statement may already have ended the transaction
                raise
            self._execute("COMMIT")

    def _user_query(self, cypher: str, params: dict, timeout_s: Optional[float]) -> QueryResult:
        with self._lock:
            if timeout_s:
                self._conn.set_query_timeout(int(timeout_s * 1000))
            try:
                self._conn.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    result = self._conn.execute(cypher, params)
                    if isinstance(result, list):
                        raise ReadOnlyViolation("read-only query refused: several statements")
                    cols = result.get_column_names()
                    rows = [list(r) for r in result.get_all()]
                finally:
                    try:
                        self._conn.execute("ROLLBACK")
                    except RuntimeError:
                        pass
            except ReadOnlyViolation:
                raise
            except RuntimeError as e:
                msg = str(e)
                if "read-only" in msg.lower() or "read only" in msg.lower():
                    raise ReadOnlyViolation(f"read-only query refused: {msg}") from e
                if msg.strip() == "Interrupted.":
                    raise QueryError(f"query stopped after its time limit of {timeout_s:g} s") from e
                raise QueryError(msg) from e
            finally:
                if timeout_s:
                    self._conn.set_query_timeout(0)
        return QueryResult(cols, rows)

    def bulk_copy(self, table: str, columns: dict) -> None:
        """Bulk-load rows into node or relationship table ``table`` with COPY.

        For benchmarks and imports of large synthetic stories: ~1 M rows per second where row-by-row
        MERGE manages ~10 k. ``columns`` maps column name to a list or pyarrow array (relationship tables
        take ``from`` and ``to`` ids first); columns left out are NULL.
        """
        import pyarrow as pa

        if table not in _COPYABLE:
            raise StoreInputError(f"cannot bulk-load table {table!r}")
        names, types = _table_columns(table)
        n = len(next(iter(columns.values())))
        arrays = []
        for name, typ in zip(names, types):
            if name in columns:
                arrays.append(pa.array(columns[name], type=typ) if not isinstance(columns[name], pa.Array)
                              else columns[name])
            else:
                arrays.append(pa.nulls(n, type=typ))
        unknown = set(columns) - set(names)
        if unknown:
            raise StoreInputError(f"table {table} has no column(s) {sorted(unknown)}")
        with self._lock:
            self._execute(queries.load(f"copy_{table.lower()}", self.dialect), {"data": pa.table(arrays, names=names)})

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
                self._conn = None
            if getattr(self, "_db", None) is not None:
                self._db.close()
                self._db = None


_COPYABLE = {"Scene", "Character", "Environment", "Appearance", "APPEARS_IN", "NEXT", "HAS_SCENE", "SET_IN", "OF", "IN"}


def _table_columns(table: str):
    """Column names and arrow types of ``table``, read from the schema file (the one place they are declared)."""
    import pyarrow as pa

    types = {"STRING": pa.string(), "DOUBLE": pa.float64(), "INT64": pa.int64(), "BOOLEAN": pa.bool_(),
             "STRING[]": pa.list_(pa.string()), "INT64[]": pa.list_(pa.int64()), "FLOAT[]": pa.list_(pa.float32())}
    pattern = re.compile(r"CREATE (NODE|REL) TABLE IF NOT EXISTS `?(\w+)`?\((.*)\)\s*$")
    for stmt in queries.load("schema", "ladybug").split(";"):
        m = pattern.match(stmt.strip())
        if not m or m.group(2) != table:
            continue
        names, arrow = [], []
        if m.group(1) == "REL":
            names, arrow = ["from", "to"], [pa.string(), pa.string()]
        for part in m.group(3).split(","):
            part = part.strip()
            if part.startswith(("PRIMARY KEY", "FROM ")):
                continue
            name, typ = part.split()
            names.append(name)
            arrow.append(types[typ])
        return names, arrow
    raise StoreInputError(f"no table {table!r} in the schema")
