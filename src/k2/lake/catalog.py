"""Opening the Iceberg catalog and creating K2's tables idempotently."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.table import Table
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from k2.errors import CatalogError, StorageError
from k2.lake.fileio import use_object_store
from k2.lake.layout import partition_spec, sort_order, table_properties
from k2.schemas import Dataset
from k2.schemas.iceberg import iceberg_schema
from k2.settings import Settings


@contextlib.contextmanager
def catalog_errors(where: str) -> Iterator[None]:
    """A catalog database or table metadata that cannot be read becomes one CatalogError saying which."""
    try:
        yield
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise CatalogError(f"the Iceberg catalog {where} cannot be used: {cause}") from None
    except (OSError, ValueError) as exc:  # unreadable or corrupt metadata files (JSON, Avro manifests)
        raise CatalogError(f"the Iceberg metadata of {where} cannot be read: {exc}") from None


@contextlib.contextmanager
def catalog_outage(settings: Settings, doing: str, advice: str = "") -> Iterator[None]:
    """The catalog failing mid-work (its database stopped, a connection cut, a REST server gone) as one
    CatalogError naming it, instead of a driver's exception. Errors of K2's own are left as they are."""
    from pyiceberg.exceptions import ServerError, ServiceUnavailableError
    from requests.exceptions import ConnectionError as RequestsConnectionError

    try:
        yield
    except (SQLAlchemyError, ServerError, ServiceUnavailableError, RequestsConnectionError) as exc:
        cause = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300] or type(exc).__name__
        where = settings.catalog_uri if settings.catalog_type == "rest" else redacted(settings.resolved_catalog_uri)
        raise CatalogError(f"the Iceberg catalog {where} failed while {doing}: {cause}{advice}") from None


@contextlib.contextmanager
def storage_outage(settings: Settings, doing: str, advice: str = "") -> Iterator[None]:
    """The lake's storage failing mid-work (S3 unreachable, a full disk) as one StorageError naming it."""
    try:
        yield
    except OSError as exc:
        cause = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise StorageError(f"the lake's storage {settings.resolved_warehouse} failed while {doing}: {cause}"
                           f"{advice}") from None


def open_catalog(settings: Settings, writable: bool = True) -> Catalog:
    """The configured catalog; the default is SQLite + a local warehouse under K2_HOME (created for writers; a
    reader may open a read-only home)."""
    use_object_store(settings)
    if writable and settings.embedded_catalog:
        settings.home_dir  # noqa: B018 - creates K2_HOME, or says clearly why it cannot
    if settings.catalog_type == "rest":
        return _rest_catalog(settings)
    uri = _waiting_for_locks(settings.resolved_catalog_uri, settings.catalog_lock_wait_seconds)
    with catalog_errors(redacted(uri)):
        for attempt in range(3):
            try:
                return SqlCatalog(settings.catalog_name, uri=uri, warehouse=settings.resolved_warehouse,
                                  **settings.s3_properties())
            except SQLAlchemyError as exc:
                # SqlCatalog creates its tables when it opens: two openers of a fresh catalog (an ingest and a
                # `k2 maintain` started together) race, and the loser's CREATE TABLE fails. The winner made them.
                if "already exists" not in str(exc) or attempt == 2:
                    raise
    raise AssertionError("unreachable")


def _waiting_for_locks(uri: str, seconds: float) -> str:
    """A SQLite URI whose connections wait `seconds` for another process's lock (SQLite's default is 5 s: a
    sqlite3 shell or a backup holding the file longer made every commit, and so `k2 ingest`, fail)."""
    if not uri.startswith("sqlite") or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={seconds:g}"


def _rest_catalog(settings: Settings) -> Catalog:
    from pyiceberg.catalog.rest import RestCatalog

    properties = {"uri": str(settings.catalog_uri), **settings.s3_properties()}
    if settings.warehouse:
        properties["warehouse"] = settings.warehouse
    if settings.catalog_credential:  # OAuth2 client credentials, exchanged at the spec's token endpoint
        properties["credential"] = settings.catalog_credential
        properties["oauth2-server-uri"] = f"{str(settings.catalog_uri).rstrip('/')}/v1/oauth/tokens"
    try:
        return RestCatalog(settings.catalog_name, **properties)
    except Exception as exc:  # connection refused, bad credentials, unknown warehouse: pyiceberg's own types vary
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CatalogError(f"the Iceberg REST catalog at {settings.catalog_uri} cannot be used: {cause}") from None


def redacted(uri: str) -> str:
    """A database URI without its password, for messages."""
    head, at, tail = uri.rpartition("@")
    if not at or "://" not in head:
        return uri
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"


def table_identifier(settings: Settings, dataset: Dataset) -> tuple[str, str]:
    return (settings.namespace, dataset.value)


def ensure_table(catalog: Catalog, settings: Settings, dataset: Dataset, _retry: bool = True) -> Table:
    """Load the dataset's table, creating namespace and table with K2's layout if they do not exist."""
    identifier = table_identifier(settings, dataset)
    try:
        with catalog_errors(".".join(identifier)):
            return _evolved(with_current_properties(catalog.load_table(identifier), settings), dataset)
    except NoSuchTableError:
        pass
    schema = iceberg_schema(dataset)
    try:
        with contextlib.suppress(NamespaceAlreadyExistsError):
            catalog.create_namespace(settings.namespace)
        return catalog.create_table_if_not_exists(
            identifier,
            schema=schema,
            partition_spec=partition_spec(dataset, schema, settings.symbol_buckets),
            sort_order=sort_order(dataset, schema),
            properties=table_properties(settings),
        )
    except Exception:
        # another process or thread created the namespace or table between our check and our create (SQLite
        # reports that as an integrity error, not as "already exists"): use theirs
        if catalog.table_exists(identifier):
            return catalog.load_table(identifier)
        if not _retry or not catalog.namespace_exists(settings.namespace):
            raise
        return ensure_table(catalog, settings, dataset, _retry=False)


def _evolved(table: Table, dataset: Dataset) -> Table:
    """Add the fields of newer schema versions (all optional): old rows read them as null."""
    current = iceberg_schema(dataset)
    if set(current.column_names) - set(table.schema().column_names):
        with table.update_schema() as update:
            update.union_by_name(current)
    return table


def with_current_properties(table: Table, settings: Settings) -> Table:
    """Tables created by an older K2 (or under other settings) get the current table properties; files written
    before keep their layout until `k2 maintain` rewrites them."""
    wanted = table_properties(settings)
    stale = {k: v for k, v in wanted.items() if k != "format-version" and table.properties.get(k) != v}
    if stale:
        with table.transaction() as transaction:
            transaction.set_properties(stale)
    return table


def load_table(catalog: Catalog, settings: Settings, dataset: Dataset) -> Table | None:
    identifier = table_identifier(settings, dataset)
    try:
        with catalog_errors(".".join(identifier)):
            return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


_LOCATION_SQL = text(
    "SELECT metadata_location FROM iceberg_tables "
    "WHERE catalog_name = :catalog AND table_namespace = :namespace AND table_name = :name"
)


def location_in_catalog(catalog: Catalog, settings: Settings, table_name: str) -> str | None:
    """Where the table's current metadata is (None: no table), through the catalog: one indexed row of a SQL
    catalog (~0.1 ms), a full load for other kinds. The SQLite default is read without SQLAlchemy (lake/locate.py)."""
    identifier = (settings.namespace, table_name)
    with catalog_errors(".".join(identifier)):
        if isinstance(catalog, SqlCatalog):
            with catalog.engine.connect() as connection:
                found = connection.execute(
                    _LOCATION_SQL, {"catalog": catalog.name, "namespace": identifier[0], "name": identifier[1]}
                ).scalar()
            return str(found) if found else None
        try:
            return catalog.load_table(identifier).metadata_location
        except NoSuchTableError:
            return None


_NAMESPACE_SQL = text(
    "SELECT table_name, metadata_location FROM iceberg_tables "
    "WHERE catalog_name = :catalog AND table_namespace = :namespace"
)


def table_locations(catalog: Catalog, settings: Settings) -> dict[str, str]:
    """Table name → current metadata location of every table in K2's namespace. A SQL catalog answers in one
    statement, which is one consistent state of the whole lake; other catalogs table by table."""
    from pyiceberg.exceptions import NoSuchNamespaceError

    with catalog_errors(settings.namespace):
        if isinstance(catalog, SqlCatalog):
            with catalog.engine.connect() as connection:
                rows = connection.execute(
                    _NAMESPACE_SQL, {"catalog": catalog.name, "namespace": settings.namespace}).all()
            return {str(name): str(location) for name, location in rows if location}
        try:
            names = [identifier[-1] for identifier in catalog.list_tables(settings.namespace)]
        except NoSuchNamespaceError:
            return {}
        found = {}
        for name in names:
            try:
                found[name] = catalog.load_table((settings.namespace, name)).metadata_location
            except NoSuchTableError:  # dropped between the listing and the load
                continue
        return found
