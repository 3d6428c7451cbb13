"""CSV loading: the real ASX layout, the generic layout, and bad rows reported by line without losing good ones."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from k2.data import asx_sample_dir
from k2.ingest.csv_loader import CsvLayoutError, LoadStats, detect_layout, read_ticks

DVN = asx_sample_dir() / "trades" / "7181.csv"
SYDNEY = ZoneInfo("Australia/Sydney")


def _load(path: Path, **kwargs: object) -> tuple[pa.Table, LoadStats]:
    stats = LoadStats()
    chunks = list(read_ticks("trades", path, stats=stats, **kwargs))  # type: ignore[arg-type]
    return pa.concat_tables(chunks), stats


def _file_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_asx_dvn_matches_the_file() -> None:
    table, stats = _load(DVN)
    rows = _file_rows(DVN)
    assert detect_layout(DVN) == "asx"
    assert stats.rows_read == len(rows) == table.num_rows == 232
    assert stats.rows_rejected == 0
    assert set(table["symbol"].to_pylist()) == {"DVN"}  # from company_info.csv: 7181 → DVN
    first_local = dt.datetime.strptime(f"{rows[0][0]} {rows[0][1]}", "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=SYDNEY)
    last_local = dt.datetime.strptime(f"{rows[-1][0]} {rows[-1][1]}", "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=SYDNEY)
    assert table["ts"][0].as_py() == first_local.astimezone(dt.UTC)
    assert table["ts"][0].as_py() == dt.datetime(2014, 3, 9, 23, 13, 34, 553000, tzinfo=dt.UTC)  # AEDT = UTC+11
    assert table["ts"][-1].as_py() == last_local.astimezone(dt.UTC)
    assert table["price"].to_pylist() == [Decimal(r[2]) for r in rows]
    assert table["sequence"].to_pylist() == list(range(1, 233))  # file order is exchange order


def test_malformed_rows_are_reported_by_line_and_good_rows_kept(tmp_path: Path) -> None:
    lines = DVN.read_text().splitlines()
    broken = {
        51: ("03/10/2014,10:13:34.553,abc,8216,0,,", "price 'abc' is not a decimal number"),
        61: ("03/10/2014,10:13:34.553,0.67", "expected 7 columns, got 3"),
        81: ("13/45/2014,10:13:34.553,0.67,100,0,,", "date/time '13/45/2014'"),
        91: ("03/10/2014,10:13:34.553,0.67,-5,0,,", "size '-5' must be > 0"),
        101: ("03/10/2014,10:13:34.553,0,100,0,,", "price '0' must be > 0"),
    }
    for line, (text, _) in broken.items():
        lines[line - 1] = text
    path = tmp_path / "7181.csv"
    path.write_text("\n".join(lines) + "\n")
    table, stats = _load(path, symbol="DVN", chunk_rows=16)  # many chunks: line numbers must survive chunking
    assert [r.line for r in stats.rejected] == sorted(broken)
    for rejected in stats.rejected:
        assert broken[rejected.line][1] in rejected.reason
    assert stats.rows_read == 232
    assert table.num_rows == 232 - len(broken)
    good_lines = [i for i in range(1, 233) if i not in broken]
    assert table["sequence"].to_pylist() == good_lines
    expected_sizes = [int(lines[i - 1].split(",")[3]) for i in good_lines]
    assert table["size"].to_pylist() == expected_sizes


def test_generic_layout_with_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "generic.csv"
    path.write_text(
        "symbol,ts,price,size,side,exchange\n"
        "AAA,2024-01-02T14:30:00.000001Z,10.5,100,B,\n"
        "BBB,2024-01-02 14:30:01,20,5,sell,XNYS\n"
        "AAA,not-a-time,10.5,100,B,\n"
        "AAA,2024-01-02T14:30:02+01:00,10.25,7,,\n"
        "CCC,2024-01-02T14:30:03Z,1.5,10,SIDEWAYS,\n"
        "AAA,2024-01-02T14:30:04Z,10.75,1.5,S,\n"
        "AAA,2024-01-02T14:30:05Z,11,3,S,\n"
    )
    table, stats = _load(path, exchange="K2X")
    assert [(r.line, r.reason.split(" ")[0]) for r in stats.rejected] == [(4, "ts"), (6, "side"), (7, "size")]
    assert table["symbol"].to_pylist() == ["AAA", "BBB", "AAA", "AAA"]
    assert table["exchange"].to_pylist() == ["K2X", "XNYS", "K2X", "K2X"]
    assert table["side"].to_pylist() == ["BUY", "SELL", "UNKNOWN", "SELL"]
    assert table["ts"][2].as_py() == dt.datetime(2024, 1, 2, 13, 30, 2, tzinfo=dt.UTC)
    # per-symbol sequence in file order when the file has none
    assert table["sequence"].to_pylist() == [1, 1, 2, 3]


def test_generic_layout_requires_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("symbol,price,size\nAAA,1,1\n")
    with pytest.raises(CsvLayoutError, match=r"asx|company"):
        list(read_ticks("trades", path))
    with pytest.raises(CsvLayoutError, match=r"lacks required column\(s\) \['ts'\]"):
        list(read_ticks("trades", path, layout="generic"))


def test_asx_file_without_symbol_mapping_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "9999.csv"
    path.write_text("03/10/2014,10:13:34.553,0.67,8216,0,,\n")
    with pytest.raises(CsvLayoutError, match="--symbol"):
        list(read_ticks("trades", path))


def test_daily_volume_by_exchange_date() -> None:
    table, _ = _load(DVN)
    from_lake: dict[dt.date, int] = defaultdict(int)
    for ts, size in zip(table["ts"].to_pylist(), table["size"].to_pylist(), strict=True):
        from_lake[ts.astimezone(SYDNEY).date()] += size
    from_file: dict[dt.date, int] = defaultdict(int)
    for row in _file_rows(DVN):
        from_file[dt.datetime.strptime(row[0], "%m/%d/%Y").date()] += int(row[3])
    assert from_lake == from_file
