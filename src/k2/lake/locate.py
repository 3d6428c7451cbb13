"""Where a table's current metadata file is: the catalog's pointer, read the cheapest way the catalog allows.

The pointer is what a reader checks before every query (has the table changed?). For the default SQLite catalog
it is one indexed row read with the standard library's sqlite3 (~30 µs, and no SQLAlchemy import, ~0.3 s);
other SQL catalogs go through SQLAlchemy (lake/catalog.py), other catalog kinds through a table load.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from k2.errors import CatalogError
from k2.lake.fileio import use_object_store
from k2.settings import Settings

_SQLITE_PREFIX = "sqlite:///"
_LOCATION_SQL = (
    "SELECT metadata_location FROM iceberg_tables "
    "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?"
)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a plain `sqlite:///path` URI (None for other URIs, or ones with options)."""
    if not uri.startswith(_SQLITE_PREFIX) or "?" in uri:
        return None
    return Path(uri[len(_SQLITE_PREFIX):])


class Locator:
    """Current metadata locations of one catalog's tables. Safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sqlite = sqlite_path(settings.resolved_catalog_uri) if settings.catalog_type == "sql" else None
        use_object_store(settings)
        self._local = threading.local()

    def location(self, table_name: str) -> str | None:
        """The metadata location of `namespace.table_name` (None: no such table, or no catalog yet)."""
        if self._sqlite is None:
            return self._through_catalog(table_name)
        try:
            row = self._connection().execute(
                _LOCATION_SQL, (self._settings.catalog_name, self._settings.namespace, table_name)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a catalog no table was ever created in
                return None
            raise CatalogError(f"the Iceberg catalog {self._sqlite} cannot be used: {exc}") from None
        except sqlite3.Error as exc:
            raise CatalogError(f"the Iceberg catalog {self._sqlite} cannot be used: {exc}") from None
        return str(row[0]) if row and row[0] else None

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            assert self._sqlite is not None
            if not self._sqlite.exists():  # nothing was ever written: no tables (and do not create the file)
                raise sqlite3.OperationalError("no such table: iceberg_tables")
            try:
                connection = sqlite3.connect(f"{self._sqlite.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            except sqlite3.Error as exc:
                raise CatalogError(f"the Iceberg catalog {self._sqlite} cannot be opened: {exc}") from None
            self._local.connection = connection
        return connection

    def _through_catalog(self, table_name: str) -> str | None:
        from k2.lake.catalog import location_in_catalog, open_catalog

        catalog = getattr(self, "_catalog", None)
        if catalog is None:
            catalog = self._catalog = open_catalog(self._settings, writable=False)
        return location_in_catalog(catalog, self._settings, table_name)
