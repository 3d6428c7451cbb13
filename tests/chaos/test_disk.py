"""Chaos: the disk under the warehouse fills up mid-ingest. The warehouse is a small tmpfs mount made by the test:
ingest (supervised, as deployed) fails its commit with "No space left on device" in one line, keeps failing while
the disk is full, and lands everything once when the volume is grown; `k2 maintain` then removes the partial files
the failed writes left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from k2.kafka.broker import BrokerState
from k2.settings import Settings
from tests.chaos.test_storage import _unreferenced
from tests.chaos.workload import (
    Supervised,
    assert_every_tick_once,
    landed_rows,
    produce,
    record_recovery,
    trades,
    wait_for,
)
from tests.services import settings_env

pytestmark = pytest.mark.slow


def _as_root(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*([] if os.geteuid() == 0 else ["sudo", "-n"]), *command], capture_output=True, text=True)


def _mount(where: Path, size: str, remount: bool = False) -> None:
    options = f"remount,size={size}" if remount else f"size={size}"
    done = _as_root(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)])
    assert done.returncode == 0, f"this test mounts a small tmpfs (root, or sudo without a password): {done.stderr}"


def test_a_full_disk_stops_commits_and_loses_nothing(profile_broker: BrokerState, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    _mount(volume, "3m")
    try:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(home=tmp_path / "home", kafka_bootstrap=profile_broker.bootstrap,
                            broker=profile_broker.kind, topic_trades=f"chaos-{tag}", consumer_group=f"chaos-{tag}",
                            warehouse=(volume / "warehouse").as_uri())
        rows = trades(1, 120_000)
        produce(settings, rows)
        ingest = Supervised(settings, idle_seconds=10)
        wait_for(lambda: any("No space left on device" in f for f in ingest.failures), 180, "the disk full")
        stuck = landed_rows(settings)
        assert 0 < stuck < rows.num_rows
        time.sleep(2.0)  # still full: restarts keep failing, nothing more lands
        assert landed_rows(settings) == stuck
        _mount(volume, "256m", remount=True)  # the operator grows the volume
        back = time.monotonic()
        wait_for(lambda: landed_rows(settings) == rows.num_rows, 180, "everything landed")
        record_recovery("disk full, then grown", time.monotonic() - back)
        ingest.finish()
        assert all("No space left on device" in f and "lake's storage" in f for f in ingest.failures), \
            ingest.failures
        assert_every_tick_once(settings, [rows])

        maintained = subprocess.run(
            [sys.executable, "-m", "k2.cli", "maintain", "--no-compact", "--orphan-age-hours", "0"],
            env=settings_env(settings), capture_output=True, text=True, timeout=300)
        assert maintained.returncode == 0, maintained.stderr
        assert _unreferenced(settings) == set()
        assert_every_tick_once(settings, [rows])
    finally:
        _as_root(["umount", "-l", str(volume)])
