"""Exactly once under SIGKILL: `k2 ingest` is killed at random moments around its Iceberg commits and restarted;
the table ends with every trade exactly once, and no batch was ever re-read (offsets resume from the lake)."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from k2.ingest import pipeline
from k2.lake.catalog import ensure_table, open_catalog
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

TRADES = 250_000
KILLS = 10


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "K2_HOME": str(settings.home),
        "K2_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "K2_TOPIC_TRADES": settings.topic_trades,
        "K2_TOPIC_QUOTES": settings.topic_quotes,
        "K2_TOPIC_REFERENCE": settings.topic_reference,
        "K2_CONSUMER_GROUP": settings.consumer_group,
        "K2_INGEST_COMMIT_ROWS": "5000",
        "K2_SESSION_TIMEOUT_MS": "6000",
        # static membership: the restarted consumer takes the killed one's place at once. Without it noida-db never
        # expires the killed member (seen: no assignment after 5 min); Kafka would after session.timeout.ms.
        "K2_CONSUMER_INSTANCE_ID": f"{settings.consumer_group}-0",
    }


def _snapshots(settings: Settings) -> int:
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    return len(table.metadata.snapshots)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_or_duplicates(kafka_settings: Settings) -> None:
    rng = random.Random(20261123)
    trades = generate_trades(dt.date(2026, 4, 1), [f"S{i:02d}" for i in range(12)], TRADES, seed=11)
    pipeline.produce_table(kafka_settings, kafka_settings.kafka_bootstrap or "", trades)
    env = _env(kafka_settings)
    command = [sys.executable, "-m", "k2.cli", "ingest", "--idle-seconds", "3"]
    kills = 0
    while kills < KILLS:
        before = _snapshots(kafka_settings)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while _snapshots(kafka_settings) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is not None:
            _, err = process.communicate()
            assert process.returncode == 0, err.decode()
            break  # everything landed before we could kill it
        time.sleep(rng.uniform(0.0, 0.2))  # lands before, inside or after the next commit
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr

    assert kills == KILLS, "the ingest finished before it could be killed often enough: use more trades"
    engine = QueryEngine(kafka_settings)
    landed = engine.trades(limit=None)
    assert landed.num_rows == TRADES
    keys = set(zip(landed["symbol"].to_pylist(), landed["sequence"].to_pylist(), strict=True))
    assert len(keys) == TRADES
    # no re-reads: a batch consumed twice would show up as duplicates in data_quality
    assert sum(q["duplicates"] for q in engine.quality().to_pylist()) == 0
