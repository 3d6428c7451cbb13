"""Lineage (docs/decisions/0023): every landed row names its source line, its Kafka record, its producer batch and
the snapshot that landed it — each checked against the thing itself (the file's line, the record at that offset,
the offsets the snapshot recorded), not against what K2 says about it."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from k2.ingest import pipeline
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.compaction import compact
from k2.lake.fileio import readable
from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets
from k2.lake.quality import BATCH_PROPERTY
from k2.lake.snapshots import ancestry, property_of
from k2.query.adjust import Adjust
from k2.query.lineage import lineage
from k2.schemas import Dataset
from k2.schemas.lineage import ProducerBatch, generator_source
from k2.settings import Settings
from k2.sources.generator import generate_trades, write_generic_csv
from tests.services import settings_env

DAY = dt.date(2026, 3, 2)
SYMBOLS = ["AAA", "BBB", "CCC"]


def _csv_with_a_bad_row(path: Path, rows: int, bad_after: int = 300, day: dt.date = DAY) -> list[str]:
    """Generated trades as a generic CSV, with a malformed line inserted after `bad_after` data lines (so a
    tick's line is not its row number); returns the file's lines."""
    write_generic_csv(generate_trades(day, SYMBOLS, rows, seed=5), str(path))
    lines = path.read_text().splitlines()
    lines.insert(bad_after + 1, "this,is,not,a,trade")
    path.write_text("\n".join(lines) + "\n")
    return lines


def _lake_rows(settings: Settings, dataset: Dataset = Dataset.TRADES) -> list[dict[str, Any]]:
    table = ensure_table(open_catalog(settings), settings, dataset)
    paths = [readable(t.file.file_path) for t in table.scan().plan_files()]
    sql = "SELECT * FROM read_parquet(?, union_by_name = true, filename = true)"
    return duckdb.connect().execute(sql, [paths]).to_arrow_table().to_pylist()


def _records(settings: Settings, topic: str) -> dict[tuple[int, int], bytes]:
    """Every record of `topic` by (partition, offset), read with a plain client."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "lineage-check",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found: dict[tuple[int, int], bytes] = {}
    while sum(1 for (p, o) in found if o < ends[p]) < sum(ends.values()):
        message = consumer.poll(5)
        assert message is not None, "the topic ended early"
        if message.error() is None:
            found[(message.partition(), message.offset())] = message.value()
    consumer.close()
    return found


def test_every_row_traces_to_its_line_record_batch_and_snapshot(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = kafka_settings.model_copy(update={"csv_chunk_rows": 250, "ingest_commit_rows": 700})
    bootstrap = settings.kafka_bootstrap or ""
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    lines = {str(first.resolve()): _csv_with_a_bad_row(first, 1_000, day=DAY),
             str(second.resolve()): _csv_with_a_bad_row(second, 1_000, day=DAY + dt.timedelta(days=1))}
    stats, _ = pipeline.load_csv(settings, bootstrap, first, layout="generic")
    assert [r.line for r in stats.rejected] == [302]
    # records that are no ticks between the loads: rows read in the same batches must still get their own offsets
    poison = Producer({"bootstrap.servers": bootstrap})
    for symbol in SYMBOLS:
        poison.produce(settings.topic_trades, b"\x00 not avro", symbol.encode())
    poison.flush(10)
    pipeline.load_csv(settings, bootstrap, second, layout="generic")
    pipeline.load_csv(settings, bootstrap, first, layout="generic")  # a reload: every row a duplicate
    report = pipeline.ingest(settings, bootstrap)
    assert report.rows_landed == 2_000 and report.dead_lettered == 3 and report.duplicates == 1_000

    rows = _lake_rows(settings)
    assert len(rows) == 2_000
    # the ingest holds the batch columns dictionary-encoded; the files must not say so (every file of a table reads
    # back with the same types, or a compaction or a pyiceberg scan mixing older files fails)
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    for task in table.scan().plan_files():
        schema = pq.read_schema(readable(task.file.file_path))
        plain = schema.field("exchange").type
        assert schema.field("source_batch").type == schema.field("landed_batch").type == plain, schema
    records = _records(settings, settings.topic_trades)
    # a row read before the record that names its batch has no source_batch; a sibling of the batch has it
    named = {r["ingest_ts"]: ProducerBatch.from_json(r["source_batch"]) for r in rows if r["source_batch"]}
    batches: dict[tuple[str, int], list[int]] = {}
    for row in rows:
        value = records[(row["kafka_partition"], row["kafka_offset"])]
        assert row["trade_id"].encode() in value  # the Kafka record at that offset is this tick
        batch = named[row["ingest_ts"]]
        source = batch.source
        assert source["sha256"] == hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
        text = lines[source["path"]][row["source_line"] - 1]
        assert text.split(",")[4] == row["trade_id"], (row["source_line"], text)  # the file's own line
        batches.setdefault((source["path"], batch.batch), []).append(row["source_line"])
    # each file's rows came in one load's batches, numbered in file order (the reload's rows were duplicates)
    for path in lines:
        spans = sorted((min(v), max(v), n) for (p, n), v in batches.items() if p == path)
        numbers = [n for *_, n in spans]
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 4
        assert all(high < low for (_, high, _), (low, _, _) in itertools.pairwise(spans))
    _check_landing_snapshots(settings, rows)


def _check_landing_snapshots(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Each row's landing batch is a snapshot whose recorded offsets cover the row's offset, and whose previous
    landing snapshot's did not: that snapshot, and no other, landed it."""
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    history = list(reversed(list(ancestry(table.metadata))))
    by_batch = {property_of(s, BATCH_PROPERTY): i for i, s in enumerate(history)}
    for row in rows:
        index = by_batch[row["landed_batch"]]
        landed = LandedOffsets.from_json(property_of(history[index], OFFSETS_PROPERTY) or "")
        assert landed.next_offsets[row["kafka_partition"]] > row["kafka_offset"]
        before = [s for s in history[:index] if property_of(s, OFFSETS_PROPERTY)]
        if before:
            previous = LandedOffsets.from_json(property_of(before[-1], OFFSETS_PROPERTY) or "")
            assert previous.next_offsets.get(row["kafka_partition"], 0) <= row["kafka_offset"]


def test_lineage_command_after_compaction_and_a_mid_batch_restart(kafka_settings: Settings, tmp_path: Path) -> None:
    """One partition, so the second ingest run starts inside the first producer batch: its rows were never seen
    with the header that names the batch, and lineage finds it on their siblings. Then a compaction rewrites the
    files: the landing snapshot stays, the compaction snapshot is named."""
    settings = kafka_settings.model_copy(update={"csv_chunk_rows": 500, "topic_partitions": 1})
    bootstrap = settings.kafka_bootstrap or ""
    path = tmp_path / "day.csv"
    _csv_with_a_bad_row(path, 1_200)
    pipeline.load_csv(settings, bootstrap, path, layout="generic")
    assert pipeline.ingest(settings, bootstrap, max_messages=250).rows_landed == 250
    assert pipeline.ingest(settings, bootstrap).rows_landed == 950
    rows = _lake_rows(settings)
    unnamed = [r for r in rows if r["source_batch"] is None]
    assert unnamed and all(250 <= r["kafka_offset"] < 500 for r in unnamed)  # the rest of batch 1, nothing else

    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    landing = {property_of(s, BATCH_PROPERTY): s.snapshot_id for s in table.metadata.snapshots}
    tick = max(unnamed, key=lambda r: (r["ts"], r["sequence"]))
    before = _traced(settings, tick)
    assert before["source"]["path"] == str(path.resolve()) and before["producer_batch"] == 1
    assert before["source_line"] == tick["source_line"] and before["offset"] == tick["kafka_offset"]
    assert before["landed_in"]["snapshot_id"] == landing[tick["landed_batch"]]
    assert before["compacted_in"] is None and before["topic"] == settings.topic_trades

    report = compact(table)
    assert report.files_before > report.files_after
    after = _traced(settings, tick)
    assert after["landed_in"] == before["landed_in"]  # the landing snapshot is still named
    assert after["compacted_in"]["snapshot_id"] == report.snapshot_id
    assert "k2 compaction" in after["compacted_in"]["operation"] and after["data_file"] != before["data_file"]
    assert {k: after[k] for k in ("source", "source_line", "offset", "partition", "load")} == {
        k: before[k] for k in ("source", "source_line", "offset", "partition", "load")}


def _traced(settings: Settings, tick: dict[str, Any]) -> dict[str, Any]:
    """`k2 lineage --json` in a process of its own, for the tick at its own time."""
    done = subprocess.run(
        [sys.executable, "-m", "k2.cli", "lineage", "--symbol", tick["symbol"], "--at", tick["ts"].isoformat(),
         "--json", "--home", str(settings.home)],
        capture_output=True, text=True, timeout=120, env=settings_env(settings),
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    assert found["row"]["trade_id"] == tick["trade_id"]
    return found


def test_generated_rows_name_the_generator_and_their_row(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    trades = generate_trades(DAY, SYMBOLS, 900, seed=11)
    source = generator_source("generate_trades", day=str(DAY), symbols=SYMBOLS, count=900, seed=11)
    pipeline.produce_table(kafka_settings, bootstrap, trades, chunk_rows=400, source=source)
    pipeline.ingest(kafka_settings, bootstrap)
    tick = trades.slice(777, 1).to_pylist()[0]
    found = lineage(kafka_settings, tick["symbol"], tick["ts"])
    assert found.row["trade_id"] == tick["trade_id"]
    assert found.source == source and found.source_line == 778 and found.producer_batch == 2
    # the generator, re-run with the recorded parameters, gives the same tick at that row
    again = generate_trades(dt.date.fromisoformat(found.source["day"]), found.source["symbols"],
                            found.source["count"], seed=found.source["seed"])
    assert again.slice(found.source_line - 1, 1).to_pylist()[0]["trade_id"] == tick["trade_id"]


def test_adjusted_trades_name_the_corporate_actions_and_their_file_version(kafka_settings: Settings,
                                                                           tmp_path: Path) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    company = tmp_path / "company_info.csv"
    company.write_text("company_id,symbol,company_name,ISIN,start_date,end_date\n"
                       "1,AAA,AAA LTD,AU000000AAA1,01/01/2010,12/31/2030\n"
                       "2,BBB,BBB LTD,AU000000BBB2,01/01/2010,12/31/2030\n")
    splits = tmp_path / "stock_splits.csv"
    splits.write_text("company id,effective date,ratio\n"
                      "2,03/01/2026,3:1\n"  # before the trades: adjusts nothing
                      "1,03/10/2026,2:1\n"  # after: adjusts AAA's trades
                      "2,03/11/2026,4:1\n")
    dividends = tmp_path / "dividends.csv"
    dividends.write_text("company id,declared date,ex_date,record_date,pay_date,net amount,gross amount,"
                         "currency type\n1,02/20/2026,03/12/2026,03/13/2026,03/30/2026,0.10,0.14,AUD\n")
    for reference in (company, splits, dividends):
        pipeline.load_reference(kafka_settings, bootstrap, reference, company_info=company)
    trades = generate_trades(DAY, SYMBOLS, 300, seed=3)
    pipeline.produce_table(kafka_settings, bootstrap, trades)
    pipeline.ingest_many(kafka_settings, bootstrap, list(Dataset), idle_seconds=2.0)

    tick = [r for r in trades.to_pylist() if r["symbol"] == "AAA"][-1]
    only_splits = lineage(kafka_settings, "AAA", tick["ts"], adjust=Adjust.SPLITS)
    assert [(a.row["action"], a.row["ratio"], a.source_line) for a in only_splits.adjusted_by] == [
        ("SPLIT", "2:1", 3)]
    action = only_splits.adjusted_by[0]
    assert action.source is not None and action.source["path"] == str(splits.resolve())
    assert action.source["sha256"] == hashlib.sha256(splits.read_bytes()).hexdigest()
    assert action.landed_in is not None and action.offset is not None
    everything = lineage(kafka_settings, "AAA", tick["ts"], adjust=Adjust.ALL)
    assert sorted((a.row["action"], a.source_line) for a in everything.adjusted_by) == [
        ("DIVIDEND", 2), ("SPLIT", 3)]
    assert lineage(kafka_settings, "AAA", tick["ts"]).adjusted_by == []
    instrument = lineage(kafka_settings, "AAA", dt.datetime(2026, 3, 2, tzinfo=dt.UTC), Dataset.REFERENCE)
    assert instrument.source_line == 2 and instrument.source is not None
    assert instrument.source["sha256"] == hashlib.sha256(company.read_bytes()).hexdigest()


def test_unknown_symbol_is_a_clear_error(kafka_settings: Settings) -> None:
    from k2.errors import QueryError

    bootstrap = kafka_settings.kafka_bootstrap or ""
    pipeline.produce_table(kafka_settings, bootstrap, generate_trades(DAY, SYMBOLS, 50, seed=1))
    pipeline.ingest(kafka_settings, bootstrap)
    with pytest.raises(QueryError, match="no trades row of ZZZ at or before"):
        lineage(kafka_settings, "ZZZ", dt.datetime(2026, 3, 3, tzinfo=dt.UTC))
