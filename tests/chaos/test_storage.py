"""Chaos: S3 goes away in the middle of a write. K2 reaches SeaweedFS's S3 through a proxy the test controls: S3
is slowed down so that a batch's data files take seconds to write, and cut as soon as the first of them appears.
That batch never commits: its files are orphans. Ingest (supervised, as deployed) says what failed, resumes once
S3 is back, lands every tick once; `k2 maintain` then removes exactly the orphans."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pyarrow import fs

from k2.kafka.broker import BrokerState
from k2.lake.catalog import load_table, open_catalog
from k2.lake.expiry import referenced_files
from k2.lake.fileio import list_files, readable
from k2.schemas import Dataset
from k2.settings import Settings
from tests.chaos.proxy import Proxy
from tests.chaos.workload import (
    Supervised,
    assert_every_tick_once,
    landed_rows,
    produce,
    record_recovery,
    trades,
    wait_for,
)
from tests.services import Seaweed, settings_env

pytestmark = pytest.mark.slow


def _data_files(seaweed: Seaweed, namespace: str) -> set[str]:
    """The trades table's Parquet files, listed on SeaweedFS directly (not through the proxy)."""
    store = fs.S3FileSystem(access_key=seaweed.access_key, secret_key=seaweed.secret_key, scheme="http",
                            endpoint_override=f"127.0.0.1:{seaweed.s3_port}", region="us-east-1")
    found = store.get_file_info(fs.FileSelector(f"{seaweed.bucket}/{namespace}/trades/data", recursive=True,
                                                allow_not_found=True))
    return {f"s3://{f.path}" for f in found if f.type == fs.FileType.File and f.path.endswith(".parquet")}


def _unreferenced(settings: Settings) -> set[str]:
    table = load_table(open_catalog(settings), settings, Dataset.TRADES)
    assert table is not None
    referenced = {readable(p) for p in referenced_files(table)}
    return {f.location for f in list_files(table.metadata.location) if f.location not in referenced}


def test_s3_cut_mid_write_leaves_orphans_that_maintain_removes(
    seaweed: Seaweed, profile_broker: BrokerState, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    with Proxy(seaweed.s3_port) as proxy:
        settings = Settings(
            home=tmp_path / "home", kafka_bootstrap=profile_broker.bootstrap, broker=profile_broker.kind,
            topic_trades=f"chaos-{tag}", consumer_group=f"chaos-{tag}", catalog_type="rest",
            catalog_uri=seaweed.catalog_uri, catalog_credential=f"{seaweed.access_key}:{seaweed.secret_key}",
            warehouse=f"s3://{seaweed.bucket}", s3_endpoint=f"http://{proxy.address}",
            s3_access_key_id=seaweed.access_key, s3_secret_access_key=seaweed.secret_key, namespace=f"c{tag}",
        )
        first, second = trades(1, 6_000), trades(2, 6_000)
        produce(settings, first)
        ingest = Supervised(settings, idle_seconds=10)
        wait_for(lambda: landed_rows(settings) == first.num_rows, 120, "phase 1 landed")
        before = _data_files(seaweed, settings.namespace)

        proxy.delay = 0.25  # each request and response chunk: a batch's files now take seconds to write
        produce(settings, second)
        wait_for(lambda: bool(_data_files(seaweed, settings.namespace) - before), 120, "a phase 2 file written")
        proxy.down()  # S3 is gone with the rest of that batch unwritten and its commit not made
        in_flight = _data_files(seaweed, settings.namespace) - before
        time.sleep(3.0)
        proxy.delay = 0.0
        proxy.up()
        back = time.monotonic()
        wait_for(lambda: landed_rows(settings) == first.num_rows + second.num_rows, 180, "phase 2 landed")
        record_recovery("s3 cut mid-write, back after 3 s", time.monotonic() - back)
        ingest.finish()
        assert ingest.failures and all("s3" in f.lower() or "storage" in f.lower() for f in ingest.failures), \
            ingest.failures
        assert_every_tick_once(settings, [first, second])

        orphans = _unreferenced(settings)
        assert in_flight and in_flight <= orphans  # the cut batch's files: written, never committed
        maintained = subprocess.run(
            [sys.executable, "-m", "k2.cli", "maintain", "--no-compact", "--orphan-age-hours", "0"],
            env=settings_env(settings), capture_output=True, text=True, timeout=300)
        assert maintained.returncode == 0, maintained.stderr
        assert f"removed {len(orphans)} unreferenced files" in maintained.stdout, maintained.stdout
        assert _unreferenced(settings) == set()
        assert_every_tick_once(settings, [first, second])  # and nothing that mattered went with them
