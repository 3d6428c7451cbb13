"""`k2 trino fetch|catalog|serve`: Trino on K2's own tables (k2.engines.trino)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from k2.cli.common import HomeOption, settings_for

trino_app = typer.Typer(help="Trino on K2's tables: fetch it, print its catalog, run it.", no_args_is_help=True)


@trino_app.command("fetch")
def trino_fetch(home: HomeOption = None) -> None:
    """Fetch the pinned trino-server from Maven Central (783 MB) into K2_HOME/cache/trino (or K2_TRINO_DIST)."""
    from k2.engines import trino

    settings = settings_for(home)
    typer.echo(f"Trino {settings.trino_version} in {trino.fetch(settings)}")


@trino_app.command("catalog")
def trino_catalog(home: HomeOption = None) -> None:
    """Print the Iceberg catalog file (etc/catalog/iceberg.properties) that gives a Trino cluster K2's tables on
    the configured PostgreSQL or REST catalog. It holds credentials: keep it as secret as the settings."""
    from k2.engines import trino

    typer.echo(trino.render(trino.catalog_properties(settings_for(home))), nl=False)


@trino_app.command("serve")
def trino_serve(
    home: HomeOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    workdir: Annotated[Path | None, typer.Option(help="Config and data dir (default K2_HOME/trino).")] = None,
) -> None:
    """Run a single-node Trino on loopback with K2's tables as catalog `iceberg` (schema = K2_NAMESPACE), until
    interrupted."""
    from k2.engines import trino

    settings = settings_for(home)
    server, process = trino.start(settings, workdir or settings.home_path / "trino", port)
    typer.echo(f"Trino serving K2's tables at {server.url} (catalog iceberg, schema {settings.namespace}); "
               "Ctrl-C stops it")
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        trino.stop(server, process)
