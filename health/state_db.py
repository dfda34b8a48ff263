"""The local state database (SQLite: data/state.db or $CHI_STATE_DB), shared by the
action store and the alert store. One connection per store instance, serialised by a
lock (safe across the app's threads); several processes may share the file (WAL, and
writes take SQLite's write lock first with BEGIN IMMEDIATE)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

UTC = dt.timezone.utc


class SqliteStore:
    """Opens `path` (":memory:" for tests), applies `schema` (idempotent DDL)."""

    def __init__(self, path: str | Path, schema: str, *, clock: Callable[[], dt.datetime] | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock or (lambda: dt.datetime.now(UTC))
        self._lock = threading.RLock()
        self._con = sqlite3.connect(self.path, timeout=15, isolation_level=None, check_same_thread=False)
        self._con.row_factory = sqlite3.Row
        self._con.execute("PRAGMA busy_timeout = 15000")
        if self.path != ":memory:":
            self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA foreign_keys = ON")
        self._con.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def now(self) -> dt.datetime:
        n = self.clock()
        return n if n.tzinfo else n.replace(tzinfo=UTC)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front)."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            else:
                self._con.execute("COMMIT")
