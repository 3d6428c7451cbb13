"""`k2 replay`: history as one ordered stream of trades and quotes, to stdout, files or Kafka, at any speed."""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from k2.cli.common import AsOfOption, EndOption, HomeOption, StartOption, SymbolOption, parse_time, settings_for
from k2.cli.output import console
from k2.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

    from k2.replay.engine import Replay

_GAP = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_GAP_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _speed(text: str) -> float | None:
    if text.strip().lower() in ("max", "0"):
        return None
    try:
        value = float(text.rstrip("xX"))
    except ValueError:
        raise InputError(f"--speed {text!r} is not max or a multiple of real time like 1, 10, 100") from None
    if value <= 0:
        raise InputError(f"--speed {text!r} must be positive (or max)")
    return value


def _gap(text: str | None) -> dt.timedelta | None:
    if text is None:
        return None
    match = _GAP.match(text.strip().lower())
    if not match:
        raise InputError(f"--skip-gaps {text!r} is not like 30m, 1h or 1d")
    return dt.timedelta(**{_GAP_UNIT[match.group(2)]: int(match.group(1))})


def replay(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    datasets: Annotated[str, typer.Option(help="trades, quotes or both (comma-separated).")] = "trades,quotes",
    speed: Annotated[str, typer.Option(help="max, or a multiple of real time: 1, 10, 100 …")] = "max",
    skip_gaps: Annotated[str | None, typer.Option(
        help="Skip quiet stretches longer than this (30m, 1h, 1d): nights and weekends pass at once.")] = None,
    as_of: AsOfOption = None,
    trades_snapshot: Annotated[int | None, typer.Option(help="Pin trades to this snapshot id (k2 snapshots).")] = None,
    quotes_snapshot: Annotated[int | None, typer.Option(help="Pin quotes to this snapshot id.")] = None,
    resume: Annotated[str | None, typer.Option(
        help="A cursor printed by an earlier replay: continue right after its last event, on its snapshots.")] = None,
    adjust: Annotated[str, typer.Option(help="none, splits or all (splits and dividends).")] = "none",
    to: Annotated[str, typer.Option(help="stdout (CSV), parquet, csv or kafka.")] = "stdout",
    out: Annotated[Path | None, typer.Option(help="The file for --to parquet|csv.")] = None,
    trades_topic: Annotated[str | None, typer.Option(help="--to kafka: the topic trades are republished to.")] = None,
    quotes_topic: Annotated[str | None, typer.Option(help="--to kafka: the topic quotes are republished to.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many events (the cursor resumes).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve Prometheus /metrics (events, pacing lateness) on PORT (address: K2_METRICS_HOST).")] = None,
) -> None:
    """Replay trades and quotes merged in exact event order (time, sequence, quotes before trades), pinned to
    the current snapshots (or --as-of), as fast as possible or paced. Ctrl-C or --limit stop cleanly and print
    a cursor: `--resume CURSOR` continues with the next event."""
    from k2.cli.progress import StopOnSignal
    from k2.query.adjust import Adjust
    from k2.replay.cursor import ReplayRequest
    from k2.replay.engine import Replay
    from k2.schemas import Dataset

    settings = settings_for(home)
    settings.existing_home()
    chosen = tuple(Dataset(_dataset(d)) for d in datasets.split(",") if d.strip())
    pins = {d: s for d, s in ((Dataset.TRADES, trades_snapshot), (Dataset.QUOTES, quotes_snapshot)) if s is not None}
    if resume is not None and (symbol or start or end or as_of or pins):
        raise InputError("--resume continues the replay its cursor came from (same symbols, window and snapshots): "
                         "leave out --symbol/--start/--end/--as-of/--*-snapshot")
    request = None if resume else ReplayRequest(
        datasets=chosen, symbols=tuple(s.strip() for s in symbol.split(",")) if symbol else None,
        start=parse_time(start, "--start"), end=parse_time(end, "--end"), adjust=Adjust(adjust).value,
        snapshots=dict(pins),
    )
    if metrics_port is not None:
        from k2.obs.metrics import serve

        serve(metrics_port, settings.metrics_host)
    session = Replay(settings, request, resume, _speed(speed), _gap(skip_gaps), parse_time(as_of, "--as-of"),
                     limit=limit)
    started = time.monotonic()
    with StopOnSignal() as stop:
        batches = _until(session, stop.requested)
        written = _deliver(settings, session, batches, to, out, trades_topic, quotes_topic)
    took = time.monotonic() - started
    pacing = session.pacing
    late = (f"; late by p50 {pacing.percentile_ms(50):.2f} ms, p99 {pacing.percentile_ms(99):.2f} ms"
            if pacing.events else "")
    console.print(f"replayed {written:,} events in {took:.2f} s ({written / max(took, 1e-9):,.0f}/s){late}")
    console.print(f"resume with: k2 replay --resume {session.cursor.token()}", soft_wrap=True)


def _dataset(text: str) -> str:
    name = text.strip().lower()
    if name not in ("trades", "quotes"):
        raise InputError(f"--datasets: {text!r} is not trades or quotes")
    return name


def _until(session: Replay, stop_requested: Callable[[], bool]) -> Iterator[pa.RecordBatch]:
    """The replay's batches until Ctrl-C (the cursor names the last event handed on)."""
    for batch in session.batches():
        yield batch
        if stop_requested():
            session.stop()


def _deliver(settings, session, batches, to: str, out: Path | None, trades_topic: str | None,  # type: ignore[no-untyped-def]
             quotes_topic: str | None) -> int:
    from k2.replay import sinks

    target = to.strip().lower()
    if target in ("parquet", "csv"):
        if out is None:
            raise InputError(f"--to {target} needs --out FILE")
        return (sinks.to_parquet if target == "parquet" else sinks.to_csv)(batches, out)
    if target == "kafka":
        from k2.kafka.broker import resolve_bootstrap
        from k2.schemas import Dataset

        topics = {d: t for d, t in ((Dataset.TRADES, trades_topic), (Dataset.QUOTES, quotes_topic))
                  if d in session.request.datasets and t}
        missing = [d.value for d in session.request.datasets if d not in topics]
        if missing:
            raise InputError(f"--to kafka needs a target topic for {', '.join(missing)} (--{missing[0]}-topic)")
        sinks.check_targets(settings, topics)  # before looking for a broker: a user error is reported first
        return sinks.to_kafka(settings, resolve_bootstrap(settings), batches, topics).delivered
    if target != "stdout":
        raise InputError(f"--to {to!r} is not stdout, parquet, csv or kafka")
    import pyarrow.csv as pacsv

    from k2.replay.order import SCHEMA

    written = 0
    with pacsv.CSVWriter(sys.stdout.buffer, SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(batch)
            sys.stdout.buffer.flush()
            written += batch.num_rows
    return written

