"""Chaos: the catalog goes away while `k2 ingest` has a batch to commit. The SQLite file is locked by another
process; PostgreSQL is stopped mid-commit. Ingest waits, commits once the catalog is back, and nothing is lost or
landed twice; no one restarts anything."""

from __future__ import annotations

import sqlite3
import time

import pytest

from k2.settings import Settings
from tests.chaos.workload import (
    assert_every_tick_once,
    finish,
    landed_rows,
    produce,
    record_recovery,
    start_ingest,
    trades,
    wait_for,
)

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
