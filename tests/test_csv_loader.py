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
from k2.errors import InputError
from k2.sources.csv_ticks import detect_layout, read_ticks
from k2.sources.report import LoadStats

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
    with pytest.raises(InputError, match=r"asx|company"):
        list(read_ticks("trades", path))
    with pytest.raises(InputError, match=r"lacks required column\(s\) \['ts'\]"):
        list(read_ticks("trades", path, layout="generic"))


def test_asx_file_without_symbol_mapping_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "9999.csv"
    path.write_text("03/10/2014,10:13:34.553,0.67,8216,0,,\n")
    with pytest.raises(InputError, match="--symbol"):
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


# ------------------------------------------------------------------------------ bytes a parser would choke on


def _generic_file(path: Path, rows: int, symbol: str = "AAA") -> list[bytes]:
    lines = [b"symbol,ts,price,size,sequence"] + [
        f"{symbol},2024-01-02T14:{i // 60 % 60:02d}:{i % 60:02d}Z,{10 + i % 7}.5,{i + 1},{i}".encode()
        for i in range(1, rows + 1)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


@pytest.mark.parametrize("chunk_rows", [1_000, 100_000])
def test_one_bad_byte_costs_only_its_row(tmp_path: Path, chunk_rows: int) -> None:
    """A 3,000-row file with one non-UTF-8 byte on line 2,501 once landed 1,723 rows (or none); now every good row
    lands and that one is rejected with its line, at any chunk size."""
    path = tmp_path / "bad-byte.csv"
    lines = _generic_file(path, 3_000)
    lines[2_500] = lines[2_500].replace(b".5,", b".5\xff,")  # line 2,501 of the file
    path.write_bytes(b"\n".join(lines) + b"\n")
    table, stats = _load(path, chunk_rows=chunk_rows)
    assert [(r.line, r.reason) for r in stats.rejected] == [
        (2_501, "not valid UTF-8 text: byte 0xFF at position 30 of the line")]
    assert (stats.rows_read, stats.rows_valid, table.num_rows) == (3_000, 2_999, 2_999)
    assert 2_500 not in table["sequence"].to_pylist()


def test_bad_bytes_in_the_header_and_the_first_chunk(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    lines = _generic_file(path, 50)
    lines[0] += b",note\xfe"  # an extra, unused column whose name is not UTF-8
    lines[1:] = [line + b"," for line in lines[1:]]
    lines[1] = lines[1].replace(b"AAA", b"A\xc3A")  # a broken two-byte sequence on line 2
    path.write_bytes(b"\n".join(lines) + b"\n")
    table, stats = _load(path)
    assert [r.line for r in stats.rejected] == [2]
    assert table.num_rows == 49


def test_asx_layout_with_a_bad_byte(tmp_path: Path) -> None:
    lines = DVN.read_bytes().splitlines()
    lines[9] = lines[9][:-1] + b"\x96"  # a Windows-1252 dash in the buyer column
    path = tmp_path / "7181.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    table, stats = _load(path, symbol="DVN")
    assert [(r.line, r.reason.startswith("not valid UTF-8")) for r in stats.rejected] == [(10, True)]
    assert table.num_rows == 231


def test_binary_garbage_in_the_middle_is_rejected_by_line(tmp_path: Path) -> None:
    """Random bytes, with NULs, stray quotes and line breaks, pasted into a file: those lines are rejected, and
    every good row before and after lands (a stray quote must not swallow the rest of the file)."""
    import random

    rng = random.Random(7)
    path = tmp_path / "garbage.csv"
    lines = _generic_file(path, 400)
    garbage = bytes(rng.randrange(256) for _ in range(4_000)).replace(b"\r", b"")
    garbage = garbage.replace(b"\n", b"\n\x00")  # every garbage line carries a NUL, whatever its other bytes
    garbage_lines = garbage.split(b"\n")
    assert any(line.count(b'"') % 2 for line in garbage_lines)  # at least one unbalanced quote among them
    path.write_bytes(b"\n".join(lines[:201] + garbage_lines + lines[201:]) + b"\n")
    table, stats = _load(path, chunk_rows=100)
    assert table.num_rows == 400
    assert table["sequence"].to_pylist() == list(range(1, 401))
    garbage_at = range(202, 202 + len(garbage_lines))
    rejected = [r.line for r in stats.rejected]
    # garbage lines whose stray quotes pair up read as one record, rejected at its first line
    assert rejected[0] == 202 and set(rejected) <= set(garbage_at) and len(rejected) > len(garbage_lines) // 2
    assert stats.rows_read == 400 + len(rejected)


def test_line_numbers_after_a_field_that_spans_lines(tmp_path: Path) -> None:
    path = tmp_path / "multiline.csv"
    path.write_text(
        "symbol,ts,price,size,conditions\n"
        'AAA,2024-01-02T14:30:00Z,10.5,100,"first line\nsecond line"\n'  # lines 2-3
        "AAA,2024-01-02T14:30:01Z,oops,100,\n"  # line 4
        'AAA,2024-01-02T14:30:02Z,10.5,100,"a\nb\nc"\n'  # lines 5-7
        "AAA,2024-01-02T14:30:03Z,10.5,-1,\n"  # line 8
        "AAA,2024-01-02T14:30:04Z,10.5,1\n"  # line 9: a column short
    )
    table, stats = _load(path)
    assert [r.line for r in stats.rejected] == [4, 8, 9]
    assert table["conditions"].to_pylist() == ["first line\nsecond line", "a\nb\nc"]


def test_oversized_fields_are_rejected_per_row(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    long_symbol = "X" * 9_960
    path.write_text(
        "symbol,ts,price,size,exchange\n"
        "AAA,2024-01-02T14:30:00Z,10.5,100,\n"
        f"{long_symbol},2024-01-02T14:30:01Z,10.5,100,\n"
        f"BBB,2024-01-02T14:30:01Z,10.5,100,{'E' * 17}\n"
        f"{'S' * 32},2024-01-02T14:30:02Z,10.5,100,\n"  # exactly at the bound: fine
    )
    table, stats = _load(path)
    assert [(r.line, r.reason) for r in stats.rejected] == [
        (3, "symbol is longer than 32 bytes (9960)"), (4, "exchange is longer than 16 bytes (17)")]
    assert table["symbol"].to_pylist() == ["AAA", "S" * 32]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b""), "is empty"),
])
def test_files_that_are_not_csv_files(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "input.csv"
    make(path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        list(read_ticks("trades", path, layout="generic"))


def test_a_byte_order_mark_does_not_hide_the_header(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    _generic_file(path, 3)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    table, stats = _load(path)
    assert (table.num_rows, stats.rows_rejected) == (3, 0)


def test_detect_tells_trades_quotes_and_reference_apart(tmp_path: Path) -> None:
    from k2.sources.detect import detect

    sample = asx_sample_dir()
    assert (detect(sample / "trades" / "7181.csv").dataset, detect(sample / "trades" / "7181.csv").layout) == (
        "trades", "asx")
    assert (detect(sample / "quotes" / "7181.csv").dataset, detect(sample / "quotes" / "7181.csv").layout) == (
        "quotes", "asx")
    assert detect(sample / "reference-data" / "dividends.csv").dataset == "reference"
    generic = tmp_path / "g.csv"
    _generic_file(generic, 2)
    assert (detect(generic).dataset, detect(generic).layout) == ("trades", "generic")
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match=r"cannot tell what this file holds.*--dataset"):
        detect(odd)


def test_reference_files_reject_bad_lines_and_keep_the_rest(tmp_path: Path) -> None:
    from k2.sources.reference import read_reference

    path = tmp_path / "company_info.csv"
    lines = (asx_sample_dir() / "reference-data" / "company_info.csv").read_bytes().splitlines()
    extra = [b"9001,AB\xffC,Broken Name Ltd,AU0000000001,01/02/2014,", b"9002,ONLY,three fields"]
    path.write_bytes(b"\n".join([*lines, *extra, b"9003,GOOD,Good Ltd,AU0000000003,01/02/2014,"]) + b"\n")
    batch = read_reference(path)
    good = len(lines) - 1 + 1  # the sample's rows and the last one
    assert [r.line for r in batch.stats.rejected] == [len(lines) + 1, len(lines) + 2]
    assert batch.table.num_rows == good and "GOOD" in batch.table["symbol"].to_pylist()
    assert batch.stats.rows_read == good + 2
