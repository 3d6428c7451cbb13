"""The chaos suite's workload: trades produced in two phases around a fault, `k2 ingest` running as its own
process throughout, and the checks every fault must pass afterwards (every tick once, exact quality counts)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from k2.ingest import pipeline
from k2.lake.catalog import load_table, open_catalog
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades
from tests.services import settings_env

DAY = dt.date(2026, 3, 2)
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
RECOVERY_LOG = Path(__file__).parent.parent.parent / "test-artifacts" / "chaos-recovery.tsv"  # for the docs


def trades(phase: int, rows: int) -> pa.Table:
    """Phase 1 and phase 2 trades: distinct (symbol, sequence) keys, so every row must land exactly once."""
    return generate_trades(DAY + dt.timedelta(days=phase - 1), SYMBOLS, rows, seed=phase)


def produce(settings: Settings, rows: pa.Table) -> None:
    pipeline.produce_table(settings, settings.kafka_bootstrap or "", rows, chunk_rows=2_000)


def start_ingest(settings: Settings, idle_seconds: float = 4.0, **env: str) -> subprocess.Popen[str]:
    small = settings.model_copy(update={"ingest_commit_rows": 2_000, "consume_batch": 500})
    return subprocess.Popen(
        [sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--idle-seconds", str(idle_seconds)],
        env={**settings_env(small), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def landed_rows(settings: Settings) -> int:
    table = load_table(open_catalog(settings, writable=False), settings, Dataset.TRADES)
    snapshot = table.current_snapshot() if table is not None else None
    return int(snapshot.summary.get("total-records", 0)) if snapshot and snapshot.summary else 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             process: subprocess.Popen[str] | None = None) -> float:
    """Seconds until `condition` holds (it is polled every 20 ms)."""
    started = time.monotonic()
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"{what}: the process exited with {process.returncode}\n{out}\n{err}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err, err
    return out


def assert_every_tick_once(settings: Settings, produced: list[pa.Table], dead_letters: int = 0) -> None:
    """Every produced trade in the lake exactly once, with its price, and quality counts that add up exactly."""
    expected = pa.concat_tables(produced)
    rows = QueryEngine(settings).trades(limit=None)
    keys = set(zip(rows["symbol"].to_pylist(), rows["sequence"].to_pylist(), rows["ts"].to_pylist(), strict=True))
    wanted = set(zip(expected["symbol"].to_pylist(), expected["sequence"].to_pylist(), expected["ts"].to_pylist(),
                     strict=True))
    assert rows.num_rows == len(keys) == expected.num_rows
    assert keys == wanted
    assert sorted(rows["price"].to_pylist()) == sorted(expected["price"].to_pylist())
    quality = QueryEngine(settings).quality().to_pylist()
    assert sum(q["landed"] for q in quality) == expected.num_rows


def record_recovery(fault: str, seconds: float) -> None:
    """One line per fault and run: what docs/operations.md quotes."""
    RECOVERY_LOG.parent.mkdir(exist_ok=True)
    with open(RECOVERY_LOG, "a") as log:
        log.write(f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%S}\t{fault}\t{seconds:.2f}\n")
    print(f"RECOVERY {fault}: {seconds:.2f} s")


class Supervised:
    """`k2 ingest` under a supervisor, as deploy/ runs it (compose `restart: on-failure`, a Kubernetes Deployment):
    a run that fails is started again after a second, until one finishes (idle). Every failure must say what is
    wrong in one line: no traceback, no "bug in K2"."""

    def __init__(self, settings: Settings, idle_seconds: float = 4.0) -> None:
        self.failures: list[str] = []  # the last line of each failed run: what the operator reads
        self.failed_output: list[str] = []
        self._settings = settings
        self._idle = idle_seconds
        self._done = threading.Event()
        self.output = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            process = start_ingest(self._settings, self._idle)
            out, err = process.communicate(timeout=600)
            if process.returncode == 0:
                self.output = out
                self._done.set()
                return
            self.failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}")
            self.failed_output.append(err)
            time.sleep(1.0)

    def finish(self, timeout: float = 300) -> str:
        assert self._done.wait(timeout), f"ingest never finished; failures: {self.failures}"
        for failure, output in zip(self.failures, self.failed_output, strict=True):
            assert "bug in K2" not in failure, failure
            assert "Traceback" not in output, output
        return self.output
