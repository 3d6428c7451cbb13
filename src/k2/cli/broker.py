"""`k2 broker start|stop|status`: the local Kafka-protocol broker of the embedded profile."""

from __future__ import annotations

from typing import Annotated

import typer

from k2.cli.common import HomeOption, settings_for
from k2.settings import BrokerKind

app = typer.Typer(help="Manage the local Kafka-protocol broker (embedded profile).", no_args_is_help=True)


@app.command("start")
def broker_start(
    home: HomeOption = None,
    kind: Annotated[BrokerKind | None, typer.Option(help="tansu (in-memory) or noida (persists).")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Start the local broker in the background (no-op if it is already running)."""
    from k2.kafka.broker import start_daemon

    state = start_daemon(settings_for(home, broker=kind), port)
    typer.echo(f"{state.kind} broker running: bootstrap {state.bootstrap} (pid {state.pid})")


@app.command("stop")
def broker_stop(home: HomeOption = None) -> None:
    """Stop the local broker."""
    from k2.kafka.broker import stop_daemon

    state = stop_daemon(settings_for(home))
    typer.echo(f"stopped {state.kind} broker (pid {state.pid})" if state else "no local broker was running")


@app.command("status")
def broker_status(home: HomeOption = None) -> None:
    """Show whether the local broker runs and where; exit code 1 if it does not."""
    from k2.kafka.broker import port_open, read_state

    state = read_state(settings_for(home))
    if state is None:
        typer.echo("no local broker running (start one with `k2 broker start`)")
        raise typer.Exit(1)
    health = "accepting connections" if port_open(state.port) else "NOT accepting connections"
    typer.echo(f"{state.kind} broker pid {state.pid} on {state.bootstrap}: {health}")
