"""`k2 demo`: the whole pipeline on the embedded profile, in one command."""

from __future__ import annotations

from typing import Annotated

import typer

from k2.cli.common import HomeOption, writer_settings
from k2.settings import BrokerKind


def demo(
    home: HomeOption = None,
    asx: Annotated[bool, typer.Option("--asx", help="Load the bundled real ASX sample (DVN, MWR) instead.")] = False,
    trades: Annotated[int, typer.Option(min=1, help="Synthetic trades in the day.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    broker: Annotated[BrokerKind | None, typer.Option(help="Local broker to run.")] = None,
) -> None:
    """End to end: start a broker, generate a day, produce → consume → Iceberg → DuckDB, summarise, stop."""
    from k2.cli.demo_run import run_demo
    from k2.runtime import tune_gc_for_streaming

    tune_gc_for_streaming()
    run_demo(writer_settings(home, broker=broker), asx=asx, trades=trades, seed=seed)
