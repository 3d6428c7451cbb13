"""The engine's one DuckDB database, opened on first use: a query the hot tier or the bar table answers (most
one-shot CLI queries) does not import DuckDB (~55 ms of start-up)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from k2.settings import Settings


def quiet(connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """No progress bar: DuckDB draws one on stdout for queries running over 2 s, and K2's stdout carries answers
    (`k2 replay`, `k2 query --format jsonl`). A local setting (DuckDB refuses it globally); cursors inherit it."""
    connection.execute("SET enable_progress_bar = false")
    return connection


class Duck:
    """A lazily opened in-memory DuckDB; every query runs on its own cursor (threads may share it)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self._connection().cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                import duckdb

                from k2.query.objectstore import attach_object_store

                self._con = quiet(duckdb.connect())
                self._con.execute("SET GLOBAL TimeZone = 'UTC'")
                attach_object_store(self._con, self._settings)
            return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
