"""Chaos: the catalog goes away while `k2 ingest` has a batch to commit. The SQLite file is locked by another
process; PostgreSQL is stopped mid-commit. Ingest waits, commits once the catalog is back, and nothing is lost or
landed twice; no one restarts anything."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from k2.errors import CatalogError
from k2.kafka.broker import BrokerState
from k2.settings import Settings
from tests.chaos.workload import (
    Supervised,
    assert_every_tick_once,
    finish,
    landed_rows,
    produce,
    record_recovery,
    start_ingest,
    trades,
    wait_for,
)
from tests.services import LOOPBACK, running_postgres

pytestmark = pytest.mark.slow
LOCKED_SECONDS = 6.0


def test_a_locked_sqlite_catalog_delays_commits_and_loses_nothing(kafka_settings: Settings) -> None:
    settings = kafka_settings
    first, second = trades(1, 6_000), trades(2, 6_000)
    produce(settings, first)
    ingest = start_ingest(settings)
    wait_for(lambda: landed_rows(settings) == first.num_rows, 120, "phase 1 landed", ingest)

    locker = sqlite3.connect(settings.home / "catalog.db", isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")  # no other process can read or write the catalog until the rollback
    try:
        produce(settings, second)
        time.sleep(LOCKED_SECONDS)  # ingest has read the batch and is trying to commit it
        assert ingest.poll() is None, ingest.communicate()[1]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    recovery = wait_for(lambda: landed_rows(settings) == first.num_rows + second.num_rows, 120,
                        "phase 2 landed after the lock", ingest)
    finish(ingest)
    record_recovery("sqlite catalog locked 6 s", recovery)
    assert_every_tick_once(settings, [first, second])


def test_postgresql_stopped_mid_commit_loses_nothing(profile_broker: BrokerState, tmp_path: Path) -> None:
    """The trades table's catalog row is locked, so that the ingest's next commit waits inside PostgreSQL; the
    server is then stopped at once (`-m immediate`), with that commit in flight, and started 3 s later. Ingest runs
    under a supervisor, as deployed: whatever fails says so in one line, and a restart resumes from the lake."""
    import psycopg

    tag = uuid.uuid4().hex[:8]
    with running_postgres() as server:
        database = server.create_database()
        settings = Settings(home=tmp_path / "home", kafka_bootstrap=profile_broker.bootstrap,
                            broker=profile_broker.kind, topic_trades=f"chaos-{tag}", consumer_group=f"chaos-{tag}",
                            catalog_uri=server.uri(database))
        first, second = trades(1, 6_000), trades(2, 6_000)
        produce(settings, first)
        ingest = Supervised(settings, idle_seconds=10)
        wait_for(lambda: landed_rows(settings) == first.num_rows, 120, "phase 1 landed")
        locker = psycopg.connect(host=LOOPBACK, port=server.port, user=server.user, password=server.password,
                                 dbname=database)
        locker.execute("SELECT 1 FROM iceberg_tables WHERE table_name = 'trades' FOR UPDATE")
        produce(settings, second)

        watcher = psycopg.connect(host=LOOPBACK, port=server.port, user=server.user, password=server.password,
                                  dbname=database, autocommit=True)  # a transaction would see one stats snapshot

        def commit_waiting() -> bool:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE "
                "'%UPDATE iceberg_tables%'").fetchone()
            return bool(waiting and waiting[0])

        wait_for(commit_waiting, 60, "the ingest's commit waiting on the catalog row")
        server.stop()  # the commit in flight is cut off, its transaction never committed
        for connection in (locker, watcher):
            with contextlib.suppress(Exception):
                connection.close()
        time.sleep(3.0)
        server.start()
        back = time.monotonic()
        wait_for(lambda: _landed_or_none(settings) == first.num_rows + second.num_rows, 180, "phase 2 landed")
        record_recovery("postgresql stopped mid-commit, back after 3 s", time.monotonic() - back)
        out = ingest.finish()
        assert_every_tick_once(settings, [first, second])
    print("\n".join(ingest.failures))
    assert ingest.failures, "the stop should have failed the commit in flight"
    assert all("catalog" in failure.lower() for failure in ingest.failures), ingest.failures
    assert "landed" in out


def _landed_or_none(settings: Settings) -> int | None:
    try:
        return landed_rows(settings)
    except CatalogError:  # the server is still starting
        return None
