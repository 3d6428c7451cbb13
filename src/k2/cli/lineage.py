"""`k2 lineage`: where a landed tick came from (file and line, Kafka record, producer batch) and what the lake did
with it (the snapshot that landed it, the compaction that rewrote its file, the corporate actions adjusting it)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from k2.cli.common import HomeOption, choice, parse_time, settings_for
from k2.cli.output import console

if TYPE_CHECKING:
    from k2.query.lineage import Lineage, SnapshotRef

_DATASETS = ["trades", "quotes", "reference", "corporate_actions"]


def lineage(
    symbol: Annotated[str, typer.Option("--symbol", "-s", help="The symbol.", show_default=False)],
    at: Annotated[str, typer.Option("--at", help="The moment: ISO date/time (UTC unless it says), now, or -15m. "
                                    "The symbol's last row at or before it is traced.")] = "now",
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference | corporate_actions")] = "trades",
    adjust: Annotated[str, typer.Option(help="none | splits | all: also trace the corporate actions that "
                                        "back-adjust this trade's price in adjusted bars.")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    home: HomeOption = None,
) -> None:
    """Trace one landed row: the source file and line (or generator and row) it came from, the Kafka record it
    went through, the producer batch, the Iceberg snapshot that landed it and the one that compacted it."""
    from k2.errors import K2Error
    from k2.query.adjust import Adjust
    from k2.query.lineage import lineage as trace
    from k2.schemas import Dataset

    moment = parse_time(at, "--at")
    assert moment is not None
    mode = Adjust(choice(adjust, [a.value for a in Adjust], "--adjust"))
    try:
        found = trace(settings_for(home), symbol, moment, Dataset(choice(dataset, _DATASETS, "--dataset")), mode)
    except K2Error as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    _print(found)


def _print(found: Lineage, indent: str = "") -> None:
    from rich.console import Console

    out = Console(soft_wrap=True, highlight=False)  # the answer goes to stdout, one fact a line
    row = found.row
    when = row.get("ts") or row.get("valid_from") or row.get("ex_date")
    what = ", ".join(f"{k}={row[k]}" for k in ("sequence", "trade_id", "price", "size", "action", "ratio", "amount")
                     if row.get(k) is not None)
    out.print(f"{indent}[bold]{found.dataset} {row.get('exchange')}:{row.get('symbol')} at {when}[/bold] ({what})")
    source = found.source or {}
    if source.get("kind") == "file":
        origin = f"file {source.get('path')} line {found.source_line}"
        version = f"  version sha256 {source.get('sha256')}, {source.get('bytes')} bytes"
    elif source.get("kind") == "generator":
        params = ", ".join(f"{k}={v}" for k, v in source.items() if k not in ("kind", "generator"))
        origin = f"generator {source.get('generator')}({params}) row {found.source_line}"
        version = ""
    elif found.source_line is None and found.offset is None:
        origin = "not recorded: the row landed before K2 recorded lineage"
        version = ""
    else:
        origin = f"{source.get('kind', 'an unnamed source')} row {found.source_line}"
        version = ""
    out.print(f"{indent}  came from   {origin}")
    if version:
        out.print(f"{indent}  {version}")
    if found.load:
        out.print(f"{indent}  produced in load {found.load}, producer batch {found.producer_batch}")
    out.print(f"{indent}  through     {found.topic or '?'} partition {found.partition} offset {found.offset}"
                  + (f" (cluster {found.cluster})" if found.cluster else ""))
    out.print(f"{indent}  landed in   {_snapshot(found.landed_in)} (batch {found.landed_batch})")
    compacted = _snapshot(found.compacted_in) if found.compacted_in else "no: still in the file it landed in"
    out.print(f"{indent}  compacted   {compacted}")
    out.print(f"{indent}  data file   {found.data_file}")
    if found.adjusted_by:
        out.print(f"{indent}  adjusted by {len(found.adjusted_by)} corporate action(s):")
        for action in found.adjusted_by:
            _print(action, indent + "    ")


def _snapshot(ref: SnapshotRef | None) -> str:
    if ref is None:
        return "a snapshot expired since"
    return f"snapshot {ref.snapshot_id} at {ref.committed_at} ({ref.operation})"
