"""`k2 doctor`: check that the configured broker, schema registry, catalog, storage and query engine work, and
say what is wrong with each that does not (one line each, a non-zero exit code when any fails)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import typer

from k2.cli.common import HomeOption, settings_for
from k2.settings import Settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def doctor(
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option(min=0.5, help="Seconds to wait for each service.")] = 5.0,
) -> None:
    """Check the configured profile: Kafka, the schema registry, the Iceberg catalog, the warehouse storage and
    the query engine. Exits 1 when any check fails."""
    settings = settings_for(home)
    typer.echo(f"profile: {describe(settings)}")
    checks = [_run(name, probe, settings, timeout) for name, probe in PROBES]
    for check in checks:
        typer.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<9} {check.detail}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        typer.echo(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def describe(settings: Settings) -> str:
    from k2.lake.catalog import redacted

    if settings.embedded_catalog:
        catalog = f"SQLite catalog and local warehouse in {settings.home_path}"
    elif settings.catalog_type == "rest":
        catalog = f"Iceberg REST catalog {settings.catalog_uri}"
    else:
        catalog = f"SQL catalog {redacted(settings.resolved_catalog_uri)}"
    broker = settings.kafka_bootstrap or f"local {settings.broker} broker (k2 broker)"
    registry = settings.schema_registry_url or "local file registry"
    storage = f"; S3 endpoint {settings.s3_endpoint}" if settings.s3_endpoint else ""
    return f"Kafka {broker}; {registry}; {catalog}{storage}"


def _run(name: str, probe: Callable[[Settings, float], str], settings: Settings, timeout: float) -> Check:
    started = time.perf_counter()
    try:
        detail = probe(settings, timeout)
    except Exception as exc:  # every failure becomes a line naming the service and the cause
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(name, False, cause[:400])
    return Check(name, True, f"{detail} ({(time.perf_counter() - started) * 1000:.0f} ms)")


def _kafka(settings: Settings, timeout: float) -> str:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from k2.kafka.broker import resolve_bootstrap
    from k2.kafka.config import client_config

    bootstrap = resolve_bootstrap(settings)
    client = AdminClient(client_config(bootstrap))  # type: ignore[arg-type]
    try:
        metadata = client.list_topics(timeout=timeout)
    except Exception as exc:
        raise RuntimeError(f"Kafka at {bootstrap} does not answer: {exc} (check K2_KAFKA_BOOTSTRAP, or start the "
                           "local broker with `k2 broker start`)") from None
    finally:
        del client
    wanted = [settings.topic_trades, settings.topic_quotes, settings.topic_reference,
              settings.topic_corporate_actions, settings.topic_dlq]
    missing = [t for t in wanted if t not in metadata.topics]
    topics = "all K2 topics exist" if not missing else f"topics not created yet: {', '.join(missing)}"
    return f"{bootstrap}: {len(metadata.brokers)} broker(s); {topics}"


def _registry(settings: Settings, timeout: float) -> str:
    if not settings.schema_registry_url:
        found = sorted(settings.registry_dir.glob("*")) if settings.registry_dir.exists() else []
        return f"local file registry {settings.registry_dir} ({len(found)} entries)"
    import json
    import urllib.request

    url = f"{settings.schema_registry_url.rstrip('/')}/subjects"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            subjects = json.loads(response.read())
    except Exception as exc:
        raise RuntimeError(f"Schema Registry {settings.schema_registry_url} does not answer: {exc} (check "
                           "K2_SCHEMA_REGISTRY_URL)") from None
    return f"{settings.schema_registry_url}: {len(subjects)} subject(s)"


def _catalog(settings: Settings, timeout: float) -> str:
    from k2.lake.catalog import load_table, open_catalog
    from k2.schemas import Dataset

    if settings.embedded_catalog and not (settings.home_path / "catalog.db").exists():
        return f"no catalog yet in {settings.home_path} (the first `k2 ingest` or `k2 demo` creates it)"
    catalog = open_catalog(settings, writable=False)
    found = []
    for dataset in Dataset:
        table = load_table(catalog, settings, dataset)  # reads its metadata file from the warehouse too
        if table is not None:
            snapshot = table.current_snapshot()
            found.append(f"{dataset.value} ({len(table.metadata.snapshots)} snapshots"
                         + (f", current {snapshot.snapshot_id})" if snapshot else ")"))
    tables = ", ".join(found) if found else "no K2 tables yet (run `k2 ingest`)"
    return f"{type(catalog).__name__} '{settings.catalog_name}', namespace {settings.namespace}: {tables}"


def _storage(settings: Settings, timeout: float) -> str:
    from k2.lake.catalog import load_table, open_catalog
    from k2.lake.fileio import delete_file, read_bytes, use_object_store, write_bytes
    from k2.schemas import Dataset

    use_object_store(settings)
    if settings.embedded_catalog and not settings.home_path.exists():
        parent = settings.home_path.resolve().parent
        if not os.access(parent, os.W_OK):
            raise RuntimeError(f"K2_HOME {settings.home_path} does not exist and {parent} is not writable")
        return f"K2_HOME {settings.home_path} does not exist yet; {parent} is writable"
    # where K2 writes its data files (a table bucket may refuse keys outside a table's data/ folder)
    table = None if settings.embedded_catalog and not (settings.home_path / "catalog.db").exists() else \
        load_table(open_catalog(settings, writable=False), settings, Dataset.TRADES)
    root = f"{table.metadata.location}/data" if table is not None else settings.resolved_warehouse
    probe = f"{root.rstrip('/')}/k2-doctor-{uuid.uuid4().hex}"
    payload = uuid.uuid4().bytes
    try:
        write_bytes(probe, payload)
        if read_bytes(probe) != payload:
            raise RuntimeError(f"{probe} read back different bytes than were written")
        delete_file(probe)
    except OSError as exc:
        raise RuntimeError(f"cannot write, read and delete a file under {root}: {exc}") from None
    return f"{root}: write, read, delete ok"


def _query(settings: Settings, timeout: float) -> str:
    import duckdb

    from k2.query.engine import QueryEngine
    from k2.query.objectstore import attach_object_store, uses_object_store

    attach_object_store(duckdb.connect(), settings)  # the httpfs extension and S3 secret, when the lake is in S3
    counts = QueryEngine(settings.model_copy(update={"query_cache_mb": 0})).counts()
    store = "; DuckDB reads S3 (httpfs)" if uses_object_store(settings) else ""
    return f"DuckDB {duckdb.__version__}: trades of {counts.num_rows} symbol(s) readable{store}"


PROBES: list[tuple[str, Callable[[Settings, float], str]]] = [
    ("kafka", _kafka), ("registry", _registry), ("catalog", _catalog), ("storage", _storage), ("query", _query),
]
