"""`k2 broker start|stop|status|fetch`: the local Kafka-protocol broker of the embedded profile (Tansu, noida-db,
or real Apache Kafka once fetched)."""

from __future__ import annotations

from typing import Annotated

import typer

from k2.cli.common import HomeOption, settings_for
from k2.settings import BrokerKind

app = typer.Typer(help="Manage the local Kafka-protocol broker (embedded profile).", no_args_is_help=True)


@app.command("start")
def broker_start(
    home: HomeOption = None,
    kind: Annotated[BrokerKind | None, typer.Option(
        help="tansu (in-memory), noida (persists) or kafka (Apache Kafka, KRaft; `k2 broker fetch` it first).")] = None,
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


@app.command("fetch")
def broker_fetch(
    home: HomeOption = None,
    kind: Annotated[str, typer.Option(help="kafka: the only broker that is not a Python package.")] = "kafka",
    version: Annotated[str | None, typer.Option(help="Kafka version (default: K2_KAFKA_VERSION, pinned).")] = None,
) -> None:
    """Fetch Apache Kafka's jars from Maven Central into K2_HOME/cache (or K2_KAFKA_DIST): needs Maven and Java
    17+. Explicit by design: nothing is ever downloaded behind your back."""
    from k2.cli.common import choice
    from k2.kafka import distribution

    choice(kind, ["kafka"], "--kind")
    settings = settings_for(home, kafka_version=version)
    dist = settings.resolved_kafka_dist
    already = distribution.installed(dist, settings.kafka_version)
    distribution.fetch(dist, settings.kafka_version)
    size = distribution.size_bytes(dist) / 1e6
    typer.echo(f"Apache Kafka {settings.kafka_version} {'already in' if already else 'fetched into'} {dist} "
               f"({size:.0f} MB); start it with `k2 broker start --kind kafka`")
