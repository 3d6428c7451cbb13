"""`k2 registry serve|subjects`: the local schema registry."""

from __future__ import annotations

from typing import Annotated

import typer

from k2.cli.common import HomeOption, writer_settings

app = typer.Typer(help="The local schema registry.", no_args_is_help=True)


@app.command("serve")
def registry_serve(
    home: HomeOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8081,
) -> None:
    """Serve the local registry over the Confluent Schema Registry REST API (for Confluent clients and tools)."""
    import time

    from k2.registry.local import LocalSchemaRegistry
    from k2.registry.server import serve_registry

    settings = writer_settings(home)
    server = serve_registry(LocalSchemaRegistry(settings.registry_dir), port)
    typer.echo(f"schema registry on http://127.0.0.1:{port} (set K2_SCHEMA_REGISTRY_URL to use it); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


@app.command("subjects")
def registry_subjects(home: HomeOption = None) -> None:
    """Subjects and their schema ids in the local registry."""
    from k2.registry.local import LocalSchemaRegistry

    registry = LocalSchemaRegistry(writer_settings(home).registry_dir)
    for subject in registry.subjects():
        typer.echo(f"{subject}: schema ids {registry.versions(subject)}")
