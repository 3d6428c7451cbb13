"""Two consumers in one group on a multi-partition topic: the second joins mid-ingest, partitions move, and
every trade still lands exactly once."""

from __future__ import annotations

import datetime as dt
import re
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
from tests.test_exactly_once import _env

TRADES = 60_000


@pytest.mark.slow
@pytest.mark.parametrize("membership", ["dynamic", "static"])
def test_second_consumer_joining_mid_ingest_loses_and_duplicates_nothing(
    kafka_settings: Settings, membership: str
) -> None:
    """Static membership once lost a partition's tail on Tansu: its rebalances leave consumers unassigned for a
    whole session timeout, which counted as idle; unassigned time no longer does."""
    trades = generate_trades(dt.date(2026, 5, 4), [f"R{i:02d}" for i in range(16)], TRADES, seed=4)
    pipeline.produce_table(kafka_settings, kafka_settings.kafka_bootstrap or "", trades)
    # small fetches and commits keep the first consumer busy long enough for the second to join
    env = {**_env(kafka_settings), "K2_INGEST_COMMIT_ROWS": "500", "K2_CONSUME_BATCH": "500", "K2_LOG_LEVEL": "DEBUG"}
    env.pop("K2_CONSUMER_INSTANCE_ID")

    def start(instance: str) -> subprocess.Popen[str]:
        static = ["--instance-id", instance] if membership == "static" else []
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--idle-seconds", "5", *static],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    first = start("a")
    table = ensure_table(open_catalog(kafka_settings), kafka_settings, Dataset.TRADES)
    deadline = time.monotonic() + 60
    while len(table.refresh().metadata.snapshots) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = start("b")
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    for process, (_, err) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, err
    engine = QueryEngine(kafka_settings)
    rows = engine.trades(limit=None)
    quality = engine.quality().to_pylist()
    expected = {}
    for symbol in trades["symbol"].to_pylist():
        expected[symbol] = expected.get(symbol, 0) + 1
    short = [(q["symbol"], q["landed"], expected[q["symbol"]], q["last_sequence"], q["gaps"], q["missing"])
             for q in quality if q["landed"] != expected[q["symbol"]]]
    events = [[x for x in e.splitlines() if "assigned" in x or "revok" in x or "lake offsets" in x] for _, e in outputs]
    diagnostics = f"lake {rows.num_rows}, short symbols {short}, rebalances {events}"
    assert rows.num_rows == TRADES, diagnostics
    assert len(set(zip(rows["symbol"].to_pylist(), rows["sequence"].to_pylist(), strict=True))) == TRADES
    assert sum(q["duplicates"] for q in quality) == 0, diagnostics  # nothing was read twice
    # each batch's quality rows were added once, though both consumers add to one quality table
    assert sum(q["received"] for q in quality) == sum(q["landed"] for q in quality) == TRADES, diagnostics
    landed = [int(re.search(r"landed ([\d,]+) rows", out).group(1).replace(",", "")) for out, _ in outputs]  # type: ignore[union-attr]
    assert sum(landed) == TRADES, diagnostics
    assert all(n > 0 for n in landed), f"both consumers should have landed rows: {landed}"
