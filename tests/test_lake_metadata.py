"""The read path's own Iceberg metadata reader (lake/metadata.py, lake/files.py, lake/locate.py) against pyiceberg,
on a table with appends, a compaction (an overwrite that deletes manifest entries), a rollback and an expiry: every
snapshot must list the same files, row counts, bounds and buckets. And the mechanism behind a fast CLI: a query
command never imports pyiceberg or SQLAlchemy."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.conversions import from_bytes
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import StringType, TimestamptzType

from k2.errors import CatalogError
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.compaction import compact
from k2.lake.expiry import expire_snapshots
from k2.lake.files import ManifestIndex, symbol_bucket
from k2.lake.locate import Locator
from k2.lake.metadata import load_state
from k2.lake.snapshots import ancestry, rollback
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
DAYS = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]


def _stamped(rows: pa.Table) -> pa.Table:
    return rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), rows.num_rows))


def _pyiceberg_files(table, snapshot_id: int) -> dict[str, tuple[int, int, int, str, str, int]]:  # type: ignore[no-untyped-def]
    ts_id, symbol_id = table.schema().find_field("ts").field_id, table.schema().find_field("symbol").field_id
    found = {}
    for task in table.scan(snapshot_id=snapshot_id).plan_files():
        data = task.file
        found[data.file_path] = (
            data.record_count,
            from_bytes(TimestamptzType(), data.lower_bounds[ts_id]),
            from_bytes(TimestamptzType(), data.upper_bounds[ts_id]),
            from_bytes(StringType(), data.lower_bounds[symbol_id]),
            from_bytes(StringType(), data.upper_bounds[symbol_id]),
            data.partition[1],
        )
    return found


def test_every_snapshot_lists_what_pyiceberg_lists(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    for day in DAYS:
        rows = _stamped(generate_trades(day, SYMBOLS, 3_000, seed=day.day))
        for offset in range(0, rows.num_rows, 1_000):
            writer.append(table, rows.slice(offset, 1_000))
    undone = writer.append(table, _stamped(generate_trades(DAYS[1], SYMBOLS, 500, seed=9)))
    table.refresh()
    rollback(table, table.metadata.snapshot_by_id(undone).parent_snapshot_id)  # type: ignore[union-attr]
    compact(table.refresh())
    expire_snapshots(table.refresh(), None, older_than_ms=int(1e15), keep_last=4)
    table.refresh()
    assert any(s.summary.operation.value == "overwrite" for s in table.metadata.snapshots)  # type: ignore[union-attr]

    state = load_state("market.trades", table.metadata_location)
    assert [s.snapshot_id for s in state.ancestry()] == [s.snapshot_id for s in ancestry(table.metadata)]
    assert [s.snapshot_id for s in state.snapshots] == [s.snapshot_id for s in table.metadata.snapshots]
    index = ManifestIndex()
    for snapshot in state.snapshots:
        files = index.files(state, snapshot)
        ours = {
            path: (rows, low, high, sym_low, sym_high, bucket)
            for path, rows, low, high, sym_low, sym_high, bucket in zip(
                files.paths, files.rows.tolist(), files.ts_low.tolist(), files.ts_high.tolist(), files.symbol_low,
                files.symbol_high, files.bucket.tolist(), strict=True,
            )
        }
        assert ours == _pyiceberg_files(table, snapshot.snapshot_id)
        assert set(files.buckets.tolist()) <= {settings.symbol_buckets}


def test_symbol_buckets_are_icebergs_murmur3() -> None:
    chooser = random.Random(7)
    alphabet = "ABCXYZ019.-_ÄÖé漢字"
    symbols = ["".join(chooser.choices(alphabet, k=chooser.randint(1, 12))) for _ in range(2_000)]
    for buckets in (1, 7, 16, 64):
        reference = BucketTransform(buckets).transform(StringType())
        assert [symbol_bucket(s, buckets) for s in symbols] == [reference(s) for s in symbols]


def test_the_locator_reads_the_catalog_row_and_never_creates_a_catalog(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    assert Locator(settings).location("trades") is None  # no home, no catalog: nothing, and nothing created
    assert not (tmp_path / "home").exists()
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    locator = Locator(settings)
    assert locator.location("trades") == table.metadata_location
    writer.append(table, _stamped(generate_trades(DAYS[0], SYMBOLS, 100, seed=1)))
    assert locator.location("trades") == table.refresh().metadata_location  # the same connection sees commits
    assert locator.location("quotes") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "catalog.db").write_bytes(b"not a database" * 100)
    with pytest.raises(CatalogError, match="catalog"):
        Locator(Settings(home=tmp_path / "broken")).location("trades")


def test_a_query_command_imports_neither_pyiceberg_nor_sqlalchemy_nor_prometheus(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    writer.append(table, _stamped(generate_trades(DAYS[0], SYMBOLS, 2_000, seed=1)))
    probe = (
        "import sys\n"
        "from k2.cli.main import run\n"
        "sys.argv = ['k2', 'query', 'bars', '-s', 'AAA', '-i', '1h', '-f', 'csv']\n"
        "try:\n    run()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pyiceberg', 'sqlalchemy', 'prometheus_client'})\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "other = sorted(m for m in sys.modules if m.startswith('k2.cli.') and m.split('.')[2] not in "
        "{'main', 'query', 'common', 'output'})\n"
        "print('OTHER COMMANDS', other, file=sys.stderr)\n"
    )
    env = {**os.environ, "K2_HOME": str(settings.home)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('"symbol","bar_start","open"')  # it answered
    assert "HEAVY []" in done.stderr
    assert "OTHER COMMANDS []" in done.stderr  # the modules of `k2 serve`, `k2 ingest` … stay unimported


def test_java_and_python_spellings_of_a_local_file_are_the_same_file() -> None:
    """Spark and Trino write `file:/path`, pyiceberg `file:///path`: K2 reads both (seen: a Spark commit's metadata
    file was looked for under the literal name 'file:/...')."""
    from k2.lake.fileio import local_path, readable

    assert local_path("file:/tmp/w/a.parquet") == local_path("file:///tmp/w/a.parquet") == "/tmp/w/a.parquet"
    assert readable("/tmp/w/a.parquet") == "/tmp/w/a.parquet"
    assert local_path("s3://bucket/a.parquet") is None and readable("s3://bucket/a.parquet") == "s3://bucket/a.parquet"
