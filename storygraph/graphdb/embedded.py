"""The default backend: an embedded LadybugDB database in a folder on disk.

One story per folder: the tables are keyed on ids alone, so a folder holds exactly one story and loading another
into it is refused (:class:`~.store.StoreConflict`); use a folder per story, or Neo4j for several in one graph.

One process may open a database for writing; the viewer and the engine therefore share one
``EmbeddedStore`` in one process. A lock serialises this process's threads on the one connection. Since no other
process can be writing while this one holds the database, a scene it finds ``generating`` was left so by a process
that died: opening for writing marks it ``interrupted``.

Console (user-written, read-only) queries never run on that connection: ``console.py`` runs each in a
sandboxed child that opens the database file read-only. For the child to read a consistent file while the
engine goes on committing, this store checkpoints itself (never automatically inside a commit): before a
child opens, the write-ahead log is checkpointed with no transaction of ours running, and while any child is
alive no checkpoint runs, so commits only append to the log, which the child does not read.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from ..domain import MemoryParams
from ..faults import write_point
from . import queries
from .base import CypherStore
from .store import (
    DuplicateRecord, GraphUnavailable, QueryResult, RecordNotFound, StoreError, StoreInputError, StoryLocked,
)

#: The write-ahead log is checkpointed after a write transaction once it is this large (and no console
#: query is reading the file).
CHECKPOINT_WAL_BYTES = 16 << 20


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
    multi_story = False

    def __init__(self, path, story_id: Optional[str] = None, memory: Optional[MemoryParams] = None,
                 read_only: bool = False, create: bool = True):
        super().__init__(story_id, memory)
        import ladybug

        self.path = Path(path)  # the story folder; the database lives in its graph/ subfolder
        db_path = self.path / "graph"
        if self.path.exists() and not self.path.is_dir():
            raise StoreInputError(f"{self.path} is not a folder: a story folder holds the graph, media and "
                                  "storygraph.toml")
        if db_path.exists() and not db_path.is_file():
            raise StoreInputError(f"{db_path} is not a storygraph database (a LadybugDB database is one file)")
        if not create and not db_path.exists():
            raise RecordNotFound(f"no story graph at {db_path}")
        self.db_path = db_path
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = ladybug.Database(str(db_path), read_only=read_only, auto_checkpoint=False)
        except RuntimeError as e:
            if "lock" in str(e).lower():
                m = re.search(r"held by PID (\d+)", str(e))
                raise StoryLocked(db_path, int(m.group(1)) if m else None) from e
            raise StoreInputError(f"{db_path} cannot be opened as a storygraph database: {e}") from e
        self._conn = ladybug.Connection(self._db)
        self._lock = threading.RLock()
        self._read_only = read_only
        self._readers = 0  # console children reading the file now: no checkpoint while there are any
        self._readers_lock = threading.Lock()
        if not read_only:
            self.setup_schema()
            try:
                self.mark_interrupted()
            except StoreError:  # several stories in an old folder and none named: the caller will say so
                pass

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
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A database made by an older version lacks the columns added since (``CREATE ... IF NOT EXISTS`` leaves
        an existing table alone): add each, at the end of its table, as the schema file declares it there."""
        for table, columns in _declared_tables().items():
            have = {r["name"] for r in _rows(self._execute(f"CALL table_info('{table}') RETURN name"))}
            for name, typ in columns:
                if name not in have:
                    self._execute(f"ALTER TABLE `{table}` ADD {name} {typ}")

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
            if write and not self._read_only:
                try:
                    write_point("graph", self.db_path)
                except OSError:
                    self._conn.execute("ROLLBACK")
                    raise
            self._execute("COMMIT")
            if write and not self._read_only:
                self._maybe_checkpoint()

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.db_path}.wal")
        except OSError:
            return 0

    def _maybe_checkpoint(self, min_bytes: int = CHECKPOINT_WAL_BYTES) -> None:
        with self._readers_lock:
            busy = self._readers > 0
        if not busy and self._wal_bytes() > min_bytes:
            self._execute("CHECKPOINT")

    @contextmanager
    def console_fence(self):
        """Hold this store still while a console child opens the database file (see the module docstring).

        Entering checkpoints the log with no transaction of ours running and keeps the lock; the callable it
        yields releases the lock once the child has the file open. Checkpoints stay off until the exit.
        """
        if self._read_only:
            yield lambda: None
            return
        self._lock.acquire()
        held = True

        def opened() -> None:
            nonlocal held
            if held:
                held = False
                self._lock.release()
        try:
            if self._wal_bytes() > 0:
                self._execute("CHECKPOINT")
            with self._readers_lock:
                self._readers += 1
            try:
                yield opened
            finally:
                with self._readers_lock:
                    self._readers -= 1
        finally:
            opened()

    def _user_query(self, cypher: str, params: dict, limits) -> QueryResult:
        from . import console

        return console.run(self.db_path, cypher, params, limits, fence=self.console_fence)

    def bulk_copy(self, table: str, columns: dict, target: Optional[str] = None) -> None:
        """Bulk-load rows into node or relationship table ``table`` with COPY.

        For benchmarks and imports of large synthetic stories: ~1 M rows per second where row-by-row
        MERGE manages ~10 k. ``columns`` maps column name to a list or pyarrow array (relationship tables
        take ``from`` and ``to`` ids first); columns left out are NULL. ``target``: the node table the rows of a
        relationship table with several (``CONDITIONED_ON``) point at.
        """
        import pyarrow as pa

        if table not in _COPYABLE or (table in _MULTI_TARGET) != (target is not None) or \
                (target is not None and target not in _MULTI_TARGET[table]):
            raise StoreInputError(f"cannot bulk-load table {table!r}" + (f" to {target!r}" if target else ""))
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
            name = f"copy_{table.lower()}" + (f"_{target.lower()}" if target else "")
            self._execute(queries.load(name, self.dialect), {"data": pa.table(arrays, names=names)})

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
                self._conn = None
            if getattr(self, "_db", None) is not None:
                self._db.close()
                self._db = None


_COPYABLE = {"Scene", "Character", "Environment", "Appearance", "APPEARS_IN", "NEXT", "HAS_SCENE", "SET_IN", "OF", "IN",
             "CONDITIONED_ON"}
_MULTI_TARGET = {"CONDITIONED_ON": ("Scene", "Appearance")}


def _declared_tables() -> dict:
    """``{table: [(column, type), ...]}`` as the ladybug schema file declares them, in order."""
    pattern = re.compile(r"CREATE (NODE|REL) TABLE IF NOT EXISTS `?(\w+)`?\((.*)\)\s*$", re.S)
    out = {}
    for stmt in queries.load("schema", "ladybug").split(";"):
        m = pattern.match(stmt.strip())
        if m:
            parts = [p.strip() for p in m.group(3).split(",")]
            out[m.group(2)] = [tuple(p.split()[:2]) for p in parts if p and not p.startswith(("PRIMARY KEY", "FROM "))]
    return out


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
