"""`k2 dlq list|replay`: dead letters, and re-driving them after the cause is fixed."""

from __future__ import annotations

from typing import Annotated

import typer

from k2.cli.common import FormatOption, HomeOption, settings_for
from k2.cli.output import OutputFormat, render

app = typer.Typer(help="Inspect and re-drive dead letters (records that could not be landed).", no_args_is_help=True)


@app.command("list")
def dlq_list(
    home: HomeOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 100,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """Dead letters with their source topic/partition/offset and the reason they were rejected."""
    import pyarrow as pa

    from k2.kafka.broker import resolve_bootstrap
    from k2.kafka.dead_letters import read_dead_letters

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


@app.command("replay")
def dlq_replay(home: HomeOption = None) -> None:
    """Re-produce dead letters not yet replayed to their source topics (after fixing the cause), then run ingest.
    Only letters the broker acknowledged are marked replayed; a failed replay resumes where it stopped."""
    from k2.kafka.broker import resolve_bootstrap
    from k2.kafka.dead_letters import replay_dead_letters

    settings = settings_for(home)
    report = replay_dead_letters(settings, resolve_bootstrap(settings))
    typer.echo(f"re-drove {report.replayed:,} dead letters to their source topics (each acknowledged by the broker); "
               "run `k2 ingest` to land them")
