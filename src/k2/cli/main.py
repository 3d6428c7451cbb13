"""`k2`: one entry point for every stage — broker, generate, load, ingest, query, demo."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from k2.cli.output import OutputFormat, console, render
from k2.settings import BrokerKind, Settings

if TYPE_CHECKING:
    from k2.ingest.consumer import IngestReport

app = typer.Typer(
    help="K2 market data platform: CSV/feeds → Kafka (Avro) → Iceberg → DuckDB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
broker_app = typer.Typer(help="Manage the local Kafka-protocol broker (embedded profile).", no_args_is_help=True)
query_app = typer.Typer(help="Query the lake with DuckDB.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
dlq_app = typer.Typer(help="Inspect and re-drive dead letters (records that could not be landed).",
                      no_args_is_help=True)
app.add_typer(query_app, name="query")
app.add_typer(dlq_app, name="dlq")
registry_app = typer.Typer(help="The local schema registry.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="K2 data directory (env K2_HOME, default ./.k2).", show_default=False)
]


def settings_for(home: Path | None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if home is not None:
        values["home"] = home
    return Settings(**values)  # type: ignore[arg-type]


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """ISO date or datetime; no zone means UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date/time like 2024-01-02 or 2024-01-02T14:30:00Z",
                                 param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def split_symbols(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [s.strip().upper() for s in value.split(",") if s.strip()]


# --------------------------------------------------------------------------------------------------- broker


@broker_app.command("start")
def broker_start(
    home: HomeOption = None,
    kind: Annotated[BrokerKind | None, typer.Option(help="tansu (in-memory) or noida (persists).")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Start the local broker in the background (no-op if it is already running)."""
    from k2.ingest.broker import start_daemon

    state = start_daemon(settings_for(home, broker=kind), port)
    typer.echo(f"{state.kind} broker running: bootstrap {state.bootstrap} (pid {state.pid})")


@broker_app.command("stop")
def broker_stop(home: HomeOption = None) -> None:
    """Stop the local broker."""
    from k2.ingest.broker import stop_daemon

    state = stop_daemon(settings_for(home))
    typer.echo(f"stopped {state.kind} broker (pid {state.pid})" if state else "no local broker was running")


@broker_app.command("status")
def broker_status(home: HomeOption = None) -> None:
    """Show whether the local broker runs and where; exit code 1 if it does not."""
    from k2.ingest.broker import port_open, read_state

    state = read_state(settings_for(home))
    if state is None:
        typer.echo("no local broker running (start one with `k2 broker start`)")
        raise typer.Exit(1)
    health = "accepting connections" if port_open(state.port) else "NOT accepting connections"
    typer.echo(f"{state.kind} broker pid {state.pid} on {state.bootstrap}: {health}")


# ------------------------------------------------------------------------------------------------- generate


@app.command()
def generate(
    home: HomeOption = None,
    date: Annotated[str, typer.Option(help="Trading day (YYYY-MM-DD).")] = "2026-01-05",
    trades: Annotated[int, typer.Option(min=1, help="Number of trades (or quote updates) in the day.")] = 100_000,
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "ALPHA,BRAVO,CHARL,DELTA,ECHO",
    seed: Annotated[int, typer.Option(help="Random seed (same seed + day = same ticks).")] = 42,
    out: Annotated[Path | None, typer.Option(help="Write a CSV (generic layout) instead of producing.")] = None,
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference (instruments of the symbols)")] = "trades",
) -> None:
    """Generate a synthetic trading day of trades or L1 quotes (or the symbols' reference data) and produce it to
    Kafka (or write CSV with --out)."""
    from k2.ingest.generator import generate_quotes, generate_reference, generate_trades, write_generic_csv
    from k2.schemas import Dataset

    if dataset not in ("trades", "quotes", "reference"):
        raise typer.BadParameter(f"{dataset!r} is not trades, quotes or reference", param_hint="--dataset")
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not YYYY-MM-DD", param_hint="--date") from None
    names = split_symbols(symbols) or []
    if dataset == "reference":
        table = generate_reference(names, day)
    else:
        make = generate_quotes if dataset == "quotes" else generate_trades
        table = make(day, names, trades, seed)
    if out is not None:
        write_generic_csv(table, str(out))
        typer.echo(f"wrote {table.num_rows:,} {dataset} for {day} to {out}")
        return
    from k2.cli.progress import produce_with_progress
    from k2.ingest.broker import resolve_bootstrap

    settings = settings_for(home)
    produce_with_progress(settings, resolve_bootstrap(settings), table, Dataset(dataset))
    typer.echo(f"produced {table.num_rows:,} {dataset} for {day}")


# ----------------------------------------------------------------------------------------------------- load


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(help="CSV file(s) of trades or quotes.", show_default=False)],
    home: HomeOption = None,
    dataset: Annotated[str, typer.Option(
        help="trades | quotes | reference (instruments and corporate actions, detected from the header)"
    )] = "trades",
    layout: Annotated[str | None, typer.Option(help="asx | generic (default: detect from the header).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol for ASX files (default: from company_info.csv).")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange code (ASX files default to ASX).")] = None,
    company_info: Annotated[Path | None, typer.Option(help="ASX company_info.csv for id → symbol.")] = None,
    show_rejects: Annotated[int, typer.Option(help="How many rejected rows to list.")] = 20,
) -> None:
    """Load CSV trades or quotes into Kafka: streams in chunks, reports rows read / sent / rejected (line + reason)."""
    from k2.cli.progress import load_with_progress
    from k2.ingest.broker import resolve_bootstrap
    from k2.schemas import Dataset

    if dataset not in ("trades", "quotes", "reference"):
        raise typer.BadParameter(f"{dataset!r} is not trades, quotes or reference", param_hint="--dataset")
    if layout not in (None, "asx", "generic"):
        raise typer.BadParameter(f"{layout!r} is not asx or generic", param_hint="--layout")
    settings = settings_for(home)
    bootstrap = resolve_bootstrap(settings)
    for path in paths:
        if dataset == "reference":
            from k2.ingest.pipeline import load_reference

            kind, stats, report = load_reference(settings, bootstrap, path, exchange, company_info)
            typer.echo(f"{path} ({kind}): read {stats.rows_read:,} rows, sent {report.delivered:,}, "
                       f"rejected {stats.rows_rejected:,}")
            for rejected in stats.rejected[:show_rejects]:
                typer.echo(f"  line {rejected.line}: {rejected.reason}")
            continue
        stats, report = load_with_progress(
            settings, bootstrap, path, layout, symbol, exchange, company_info, Dataset(dataset)  # type: ignore[arg-type]
        )
        typer.echo(
            f"{path}: read {stats.rows_read:,} rows, sent {report.delivered:,}, rejected {stats.rows_rejected:,}"
        )
        if stats.interrupted:
            typer.echo(f"{path}: interrupted — everything read so far was flushed; re-run to load the rest "
                       "(re-loading is idempotent: duplicates are dropped at ingest)")
        for rejected in stats.rejected[:show_rejects]:
            typer.echo(f"  line {rejected.line}: {rejected.reason}")
        if stats.rows_rejected > show_rejects:
            typer.echo(f"  … {stats.rows_rejected - show_rejects} more rejected rows")
        if stats.interrupted:
            raise typer.Exit(130)


# --------------------------------------------------------------------------------------------------- ingest


@app.command()
def ingest(
    home: HomeOption = None,
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference | all")] = "trades",
    max_messages: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    idle_seconds: Annotated[float | None, typer.Option(help="Stop after this long with no new records.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT.")] = None,
    instance_id: Annotated[str | None, typer.Option(
        help="Static group membership id: a restart with the same id resumes at once (K2_CONSUMER_INSTANCE_ID)."
    )] = None,
) -> None:
    """Consume a dataset's topic into its Iceberg table (exactly once) until idle or --max-messages."""
    from k2.cli.progress import ingest_with_progress
    from k2.ingest.broker import resolve_bootstrap
    from k2.schemas import Dataset

    choices = {d.value: [d] for d in Dataset} | {"all": list(Dataset)}
    if dataset not in choices:
        raise typer.BadParameter(f"{dataset!r} is not one of {sorted(choices)}", param_hint="--dataset")
    settings = settings_for(home, consumer_instance_id=instance_id)
    if metrics_port is not None:
        from k2.obs.metrics import serve

        serve(metrics_port)
    for chosen in choices[dataset]:
        report = ingest_with_progress(
            settings, resolve_bootstrap(settings), max_messages, idle_seconds, dataset=chosen
        )
        _print_ingest(chosen.value, report, settings.topic_dlq)


def _print_ingest(dataset: str, report: IngestReport, dlq_topic: str) -> None:
    typer.echo(
        f"{dataset}: landed {report.rows_landed:,} rows in {report.commits} commit(s); snapshot {report.snapshot_id}"
        + (f"; {report.duplicates:,} duplicates dropped" if report.duplicates else "")
        + (f"; {report.late:,} late rows landed" if report.late else "")
        + (f"; {report.dead_lettered:,} records sent to {dlq_topic} (see `k2 dlq list`)"
           if report.dead_lettered else "")
    )


# ---------------------------------------------------------------------------------------------------- query

SymbolOption = Annotated[str | None, typer.Option("--symbol", "-s", help="Symbol(s), comma-separated.")]
StartOption = Annotated[str | None, typer.Option(help="From (inclusive), ISO date/time; no zone = UTC.")]
EndOption = Annotated[str | None, typer.Option(help="To (exclusive), ISO date/time; no zone = UTC.")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
SnapshotOption = Annotated[int | None, typer.Option(help="Read as of this Iceberg snapshot id (time travel).")]
LimitOption = Annotated[int | None, typer.Option(min=1, help="At most this many rows.")]


@query_app.command("trades")
def query_trades(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = 100,
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
) -> None:
    """Trades in time order."""
    _query_ticks("trades", home, symbol, start, end, limit, fmt, snapshot)


def _query_ticks(
    dataset: str, home: Path | None, symbol: str | None, start: str | None, end: str | None, limit: int | None,
    fmt: OutputFormat, snapshot: int | None,
) -> None:
    from k2.query.engine import QueryEngine, TimeRange
    from k2.schemas import Dataset

    span = TimeRange(parse_time(start, "--start"), parse_time(end, "--end"))
    engine = QueryEngine(settings_for(home))
    render(engine.ticks(Dataset(dataset), split_symbols(symbol), span, limit, snapshot), fmt, dataset)


@query_app.command("quotes")
def query_quotes(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = 100,
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
) -> None:
    """L1 quotes (bid/ask price and size; an empty side is blank) in time order."""
    _query_ticks("quotes", home, symbol, start, end, limit, fmt, snapshot)


@query_app.command("reference")
def query_reference(
    home: HomeOption = None, symbol: SymbolOption = None, fmt: FormatOption = OutputFormat.TABLE,
    actions: Annotated[bool, typer.Option("--actions", help="Corporate actions instead of instruments.")] = False,
) -> None:
    """Instrument reference data (or, with --actions, dividends, splits and mergers)."""
    from k2.query.engine import QueryEngine
    from k2.schemas import Dataset

    dataset = Dataset.CORPORATE_ACTIONS if actions else Dataset.REFERENCE
    render(QueryEngine(settings_for(home)).reference(dataset, split_symbols(symbol)), fmt, dataset.value)


@query_app.command("bars")
def query_bars(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    interval: Annotated[str, typer.Option("--interval", "-i", help="Bar size: 1m, 5m, 1h, 1d …")] = "1m",
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
) -> None:
    """OHLCV bars (open, high, low, close, volume, trade count, VWAP)."""
    from k2.query.engine import QueryEngine, TimeRange

    span = TimeRange(parse_time(start, "--start"), parse_time(end, "--end"))
    engine = QueryEngine(settings_for(home))
    render(engine.bars(split_symbols(symbol), interval, span, snapshot), fmt, f"{interval} bars")


@query_app.command("symbols")
def query_symbols(home: HomeOption = None, fmt: FormatOption = OutputFormat.TABLE) -> None:
    """Trade count and time span per symbol."""
    from k2.query.engine import QueryEngine

    render(QueryEngine(settings_for(home)).counts(), fmt, "symbols")


@app.command()
def quality(home: HomeOption = None, symbol: SymbolOption = None, fmt: FormatOption = OutputFormat.TABLE) -> None:
    """Data quality per symbol-day: received, landed, duplicates dropped, late arrivals, sequence gaps."""
    from k2.query.engine import QueryEngine

    render(QueryEngine(settings_for(home)).quality(split_symbols(symbol)), fmt, "data quality")


@dlq_app.command("list")
def dlq_list(
    home: HomeOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 100,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """Dead letters with their source topic/partition/offset and the reason they were rejected."""
    import pyarrow as pa

    from k2.ingest.broker import resolve_bootstrap
    from k2.ingest.dlq import read_dead_letters

    settings = settings_for(home)
    rows = []
    for letter in read_dead_letters(settings, resolve_bootstrap(settings)):
        rows.append({
            "source": f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}",
            "failed_at": letter.failed_at, "key": (letter.key or b"").decode(errors="replace"),
            "bytes": len(letter.value), "error": letter.error,
        })
        if len(rows) >= limit:
            break
    table = pa.Table.from_pylist(rows, schema=pa.schema(
        [("source", pa.string()), ("failed_at", pa.string()), ("key", pa.string()), ("bytes", pa.int64()),
         ("error", pa.string())]))
    render(table, fmt, f"dead letters in {settings.topic_dlq}")


@dlq_app.command("replay")
def dlq_replay(home: HomeOption = None) -> None:
    """Re-produce dead letters not yet replayed to their source topics (after fixing the cause), then run ingest."""
    from k2.ingest.broker import resolve_bootstrap
    from k2.ingest.dlq import replay_dead_letters

    settings = settings_for(home)
    count = replay_dead_letters(settings, resolve_bootstrap(settings))
    typer.echo(f"re-drove {count:,} dead letters to their source topics; run `k2 ingest` to land them")


@registry_app.command("serve")
def registry_serve(
    home: HomeOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8081,
) -> None:
    """Serve the local registry over the Confluent Schema Registry REST API (for Confluent clients and tools)."""
    import time

    from k2.ingest.registry import LocalSchemaRegistry
    from k2.ingest.registry_server import serve_registry

    settings = settings_for(home)
    server = serve_registry(LocalSchemaRegistry(settings.registry_dir), port)
    typer.echo(f"schema registry on http://127.0.0.1:{port} (set K2_SCHEMA_REGISTRY_URL to use it); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


@registry_app.command("subjects")
def registry_subjects(home: HomeOption = None) -> None:
    """Subjects and their schema ids in the local registry."""
    from k2.ingest.registry import LocalSchemaRegistry

    registry = LocalSchemaRegistry(settings_for(home).registry_dir)
    for subject in registry.subjects():
        typer.echo(f"{subject}: schema ids {registry.versions(subject)}")


# ----------------------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    home: HomeOption = None,
    asx: Annotated[bool, typer.Option("--asx", help="Load the bundled real ASX sample (DVN, MWR) instead.")] = False,
    trades: Annotated[int, typer.Option(min=1, help="Synthetic trades in the day.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    broker: Annotated[BrokerKind | None, typer.Option(help="Local broker to run.")] = None,
) -> None:
    """End to end: start a broker, generate a day, produce → consume → Iceberg → DuckDB, summarise, stop."""
    from k2.cli.demo import run_demo

    run_demo(settings_for(home, broker=broker), asx=asx, trades=trades, seed=seed)


def main() -> None:
    """Console entry point: K2's own errors become one clear line and exit code 1, not a traceback."""
    import logging
    import os

    from k2.errors import K2_ERRORS

    logging.basicConfig(
        level=os.environ.get("K2_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:  # pyiceberg logs its own commit retries as warnings
        logging.getLogger("pyiceberg").setLevel(logging.ERROR)
    try:
        app()
    except K2_ERRORS as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(1) from None
