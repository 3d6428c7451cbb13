"""Spark on K2's tables: a local (or any) Spark 3.5 session with the Iceberg runtime from Maven Central and an
Iceberg catalog made from K2's settings, named as K2's catalog so that both see the same rows of the same tables.

The catalog kinds: K2's SQLite or PostgreSQL catalog through Iceberg's JdbcCatalog (the JDBC drivers come from Maven
too), or the REST catalog with S3FileIO (Iceberg's AWS bundle). Iceberg 1.12's runtime: 1.10.x held a read lock on a
SQLite catalog for the life of the JVM, so K2's own writers failed with "database is locked" (decision 0017).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from k2.errors import ConfigError, K2Error
from k2.filelock import exclusive
from k2.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ICEBERG = "1.12.0"
ARTIFACTS = {
    "runtime": f"org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:{ICEBERG}",
    "aws": f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG}",  # S3FileIO for a REST catalog over S3
    "sqlite": "org.xerial:sqlite-jdbc:3.51.1.0",
    "postgresql": "org.postgresql:postgresql:42.7.8",
}
_COMPLETE = ".complete"

# only errors on the console; pyspark's gateway logger needs its own level equal to the root's, or Spark announces
# 'Setting default log level to "WARN"' and lowers the threshold
_LOG4J = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = off
logger.pygw.name = org.apache.spark.api.python.PythonGatewayServer
logger.pygw.level = error
"""


class SparkError(K2Error):
    """Spark's jars could not be fetched, or no Spark session could be made for this catalog."""


def jars_dir(settings: Settings) -> Path:
    return settings.spark_jars or settings.home_path / "cache" / f"spark-iceberg-{ICEBERG}"


def fetch(settings: Settings) -> Path:
    """The Iceberg runtime, AWS bundle and JDBC drivers from Maven Central (idempotent; ~110 MB)."""
    target = jars_dir(settings)
    if (target / _COMPLETE).exists():
        return target
    with exclusive(target):
        return _fetch(target)


def _fetch(target: Path) -> Path:
    if (target / _COMPLETE).exists():
        return target
    maven = shutil.which("mvn")
    if maven is None:
        raise SparkError("fetching Spark's Iceberg jars needs Maven (`mvn` on PATH; Debian: apt-get install maven)")
    target.mkdir(parents=True, exist_ok=True)
    for artifact in ARTIFACTS.values():
        done = subprocess.run([maven, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}",
                               f"-DoutputDirectory={target}"], capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise SparkError(f"Maven could not fetch {artifact}:\n{tail}")
    (target / "log4j2.properties").write_text(_LOG4J)
    (target / _COMPLETE).write_text(ICEBERG)
    return target


def _jar(folder: Path, key: str) -> str:
    _, artifact, version = ARTIFACTS[key].split(":")
    return str(folder / f"{artifact}-{version}.jar")


def spark_conf(settings: Settings) -> dict[str, str]:
    """The Spark configuration that names K2's catalog `settings.catalog_name` (as `spark-sql --conf` pairs)."""
    folder = jars_dir(settings)
    if not (folder / _COMPLETE).exists():
        raise SparkError(f"Spark's Iceberg jars are not in {folder}: run `k2 spark fetch` (Maven Central)")
    prefix = f"spark.sql.catalog.{settings.catalog_name}"
    conf = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.cache-enabled": "false",  # see K2's commits at once, not after REFRESH TABLE
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{folder / 'log4j2.properties'}",
    }
    jars = [_jar(folder, "runtime")]
    if settings.catalog_type == "rest":
        jars.append(_jar(folder, "aws"))
        conf.update({f"{prefix}.type": "rest", f"{prefix}.uri": str(settings.catalog_uri)})
        if settings.warehouse:
            conf[f"{prefix}.warehouse"] = settings.warehouse
        if settings.catalog_credential:
            conf.update({f"{prefix}.credential": settings.catalog_credential,
                         f"{prefix}.oauth2-server-uri": f"{str(settings.catalog_uri).rstrip('/')}/v1/oauth/tokens"})
        conf.update(_s3(settings, prefix))
    else:
        uri = settings.resolved_catalog_uri
        conf.update({f"{prefix}.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
                     f"{prefix}.warehouse": settings.resolved_warehouse})
        if uri.startswith("sqlite:///"):
            jars.append(_jar(folder, "sqlite"))
            conf[f"{prefix}.uri"] = f"jdbc:sqlite:{uri.removeprefix('sqlite:///')}"
        elif uri.startswith("postgresql"):
            from sqlalchemy.engine import make_url

            url = make_url(uri)
            jars.append(_jar(folder, "postgresql"))
            conf.update({f"{prefix}.uri": f"jdbc:postgresql://{url.host}:{url.port or 5432}/{url.database}",
                         f"{prefix}.jdbc.user": url.username or "", f"{prefix}.jdbc.password": url.password or ""})
        else:
            raise ConfigError(f"Spark reads K2's SQL catalog on SQLite or PostgreSQL, not {uri.split(':')[0]}")
        if settings.resolved_warehouse.startswith("s3"):
            jars.append(_jar(folder, "aws"))
            conf.update(_s3(settings, prefix))
    conf["spark.jars"] = ",".join(jars)
    return conf


def _s3(settings: Settings, prefix: str) -> dict[str, str]:
    conf = {f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO", f"{prefix}.client.region": settings.s3_region}
    if settings.s3_endpoint:
        conf.update({f"{prefix}.s3.endpoint": settings.s3_endpoint, f"{prefix}.s3.path-style-access": "true"})
    if settings.s3_access_key_id:
        conf.update({f"{prefix}.s3.access-key-id": settings.s3_access_key_id,
                     f"{prefix}.s3.secret-access-key": settings.s3_secret_access_key or ""})
    return conf


def session(settings: Settings, master: str = "local[2]", memory: str = "2g") -> SparkSession:
    """A Spark session on K2's catalog, bound to loopback, sized for a small machine."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkError("Spark needs pyspark 3.5: pip install 'k2[spark]'") from None
    builder = SparkSession.builder.master(master).appName("k2")
    local = {
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false", "spark.driver.memory": memory,
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
    }
    for key, value in {**local, **spark_conf(settings)}.items():
        if key == "spark.driver.extraJavaOptions":
            value = f"-XX:+UseSerialGC -XX:TieredStopAtLevel=1 {value}"  # half the start-up CPU on 2 cores
        builder = builder.config(key, value)
    return builder.getOrCreate()
