"""Chaos: the broker is SIGKILLed in the middle of an ingest and started again on the same port and log directory
a few seconds later. The running `k2 ingest` is never restarted: it reconnects, lands everything once, and goes on
reading what is produced after the restart (the recovery time: from the broker's return to all of it landed). A broker
that keeps its log (noida-db, Kafka) still holds the records; Tansu's memory log is gone with the process, and the
producer sends the batch again (loads are idempotent: the lake drops what it already holds)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from k2.kafka.broker import free_port, start_broker, stop_process
from k2.settings import BrokerKind, Settings
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
from tests.services import brokers_under_test

pytestmark = pytest.mark.slow
DOWN_SECONDS = 3.0


LONG_OUTAGE = 30.0  # longer than the time a consumer may go without partitions (10 s + 2 session timeouts)


@pytest.mark.parametrize(("kind", "down"), [(kind, DOWN_SECONDS) for kind in brokers_under_test()]
                         + [(brokers_under_test()[0], LONG_OUTAGE)])
def test_the_broker_killed_mid_ingest_costs_nothing(kind: BrokerKind, down: float, tmp_path: Path) -> None:
    port = free_port()
    state, process = start_broker(kind, tmp_path / "broker", port)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(home=tmp_path / "home", kafka_bootstrap=state.bootstrap, broker=kind,
                        topic_trades=f"chaos-{tag}", consumer_group=f"chaos-{tag}")
    first, second, third = trades(1, 6_000), trades(2, 40_000), trades(3, 3_000)
    try:
        produce(settings, first)
        # allowed to wait out the outage (the default gives up after 15 s: a supervisor restarts it)
        ingest = start_ingest(settings, idle_seconds=8, K2_KAFKA_CONNECT_TIMEOUT_SECONDS=str(down + 60))
        wait_for(lambda: landed_rows(settings) == first.num_rows, 120, "phase 1 landed", ingest)
        produce(settings, second)
        wait_for(lambda: landed_rows(settings) > first.num_rows, 120, "phase 2 landing", ingest)
        os.killpg(process.pid, signal.SIGKILL)  # the whole broker, at once, mid-ingest
        process.wait(timeout=10)
        at_kill = landed_rows(settings)
        assert first.num_rows < at_kill < first.num_rows + second.num_rows  # some of phase 2 landed, not all
        time.sleep(down)
        assert ingest.poll() is None, ingest.communicate()  # still waiting for the broker, not failed
        state, process = start_broker(kind, tmp_path / "broker", port)
        back = time.monotonic()
        if kind != "kafka":
            # Tansu comes back as a new, empty cluster; noida-db keeps about a second of acknowledged records in
            # memory only (measured: 20,000 acked records, all gone after a SIGKILL and a restart). What they lost,
            # the producer sends again: loads are idempotent. Kafka's log survives a killed process.
            produce(settings, second)
        produce(settings, third)  # the same ingest process reads from the broker that came back
        wait_for(lambda: landed_rows(settings) == first.num_rows + second.num_rows + third.num_rows, 180,
                 "phases 2 and 3 landed after the restart", ingest)
        record_recovery(f"broker {kind} killed, back after {down:g} s", time.monotonic() - back)
        finish(ingest)
    finally:
        with_ingest = locals().get("ingest")
        if isinstance(with_ingest, subprocess.Popen) and with_ingest.poll() is None:
            with_ingest.kill()
        stop_process(state, process)
    assert_every_tick_once(settings, [first, second, third])
