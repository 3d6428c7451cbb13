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


spark_app = typer.Typer(help="Spark on K2's tables: fetch Iceberg's runtime, print the config, run SQL.",
                        no_args_is_help=True)


@spark_app.command("fetch")
def spark_fetch(home: HomeOption = None) -> None:
    """Fetch Iceberg's Spark 3.5 runtime, its AWS bundle and the SQLite/PostgreSQL JDBC drivers from Maven Central
    (~130 MB) into K2_HOME/cache (or K2_SPARK_JARS)."""
    from k2.engines import spark

    typer.echo(f"Spark's Iceberg jars in {spark.fetch(settings_for(home))}")


@spark_app.command("conf")
def spark_conf(home: HomeOption = None) -> None:
    """Print `--conf` options that give spark-sql, spark-submit or pyspark K2's catalog (it holds credentials:
    keep it as secret as the settings)."""
    from k2.engines import spark

    for key, value in spark.spark_conf(settings_for(home)).items():
        typer.echo(f"--conf {key}={value}")


@spark_app.command("sql")
def spark_sql(
    queries: Annotated[list[str], typer.Argument(help="SQL statements, run in order; tables are "
                                                      "<catalog>.<namespace>.<table>, e.g. k2.market.trades.")],
    home: HomeOption = None,
) -> None:
    """Run Spark SQL on K2's tables in a local Spark (local[2]); prints each statement's rows as one JSON array
    per line (Spark's own JSON: decimals exact, times in UTC)."""
    import json

    from pyspark.errors import PySparkException

    from k2.engines import spark
    from k2.errors import QueryError

    session = spark.session(settings_for(home))
    try:
        for number, query in enumerate(queries, start=1):
            try:
                rows = [json.loads(row) for row in session.sql(query).toJSON().collect()]
            except PySparkException as exc:  # the statement's own fault: Spark's message, not a K2 bug
                raise QueryError(f"statement {number}: {str(exc).strip().splitlines()[0]}") from None
            typer.echo(json.dumps(rows, separators=(",", ":")))
    finally:
        session.stop()
