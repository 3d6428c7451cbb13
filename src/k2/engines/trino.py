"""Trino on K2's tables: the server from Maven Central (`io.trino:trino-server`, a tar.gz), an Iceberg catalog
made from K2's own settings (the PostgreSQL SQL catalog through Trino's JDBC catalog, or the REST catalog and its
S3 store), started on loopback.

476 is the newest trino-server on Maven Central (later releases are published elsewhere); it needs Java 24+, so a
JDK that new is looked for beside the default one (Temurin 25 here). Measured here (docs/decisions/0017): 783 MB
download, ~25-60 s to start on 2 cores, ~0.5-0.9 GB RSS, ~0.1 s fixed cost per query.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from k2.errors import ConfigError, K2Error
from k2.filelock import exclusive
from k2.settings import Settings

MIN_JAVA = 24
_COMPLETE = ".complete"


class TrinoError(K2Error):
    """Trino could not be fetched, configured or started, or a statement failed (`error_name` as Trino names it)."""

    def __init__(self, message: str, error_name: str = "") -> None:
        super().__init__(message)
        self.error_name = error_name


def server_dir(settings: Settings) -> Path:
    return settings.resolved_trino_dist / f"trino-server-{settings.trino_version}"


def installed(settings: Settings) -> bool:
    return (settings.resolved_trino_dist / _COMPLETE).exists() and server_dir(settings).exists()


def fetch(settings: Settings) -> Path:
    """Download and unpack the pinned trino-server (idempotent); Maven keeps its own copy in ~/.m2."""
    if installed(settings):
        return server_dir(settings)
    with exclusive(settings.resolved_trino_dist):
        return _fetch(settings)


def _fetch(settings: Settings) -> Path:
    if installed(settings):
        return server_dir(settings)
    maven = shutil.which("mvn")
    if maven is None:
        raise TrinoError("fetching Trino needs Maven (`mvn` on PATH; Debian: apt-get install maven)")
    dist = settings.resolved_trino_dist
    download = dist / "download"
    download.mkdir(parents=True, exist_ok=True)
    artifact = f"io.trino:trino-server:{settings.trino_version}:tar.gz"
    done = subprocess.run([maven, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}",
                           f"-DoutputDirectory={download}"], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise TrinoError(f"Maven could not fetch {artifact}:\n{tail}")
    (tarball,) = download.glob("trino-server-*.tar.gz")
    with tarfile.open(tarball) as archive:
        archive.extractall(dist, filter="tar")
    shutil.rmtree(download)
    (dist / _COMPLETE).write_text(settings.trino_version)
    return server_dir(settings)


def java_home(settings: Settings) -> Path:
    """A JDK that runs this Trino (Java 24+): K2_TRINO_JAVA_HOME, else the newest under /usr/lib/jvm."""
    if settings.trino_java_home:
        return settings.trino_java_home
    candidates = sorted(Path("/usr/lib/jvm").glob("*"), key=_java_major, reverse=True)
    for home in candidates:
        if (home / "bin" / "java").exists() and _java_major(home) >= MIN_JAVA:
            return home
    raise TrinoError(f"Trino {settings.trino_version} needs Java {MIN_JAVA}+; none found under /usr/lib/jvm: "
                     "install one (e.g. Temurin 25) and set K2_TRINO_JAVA_HOME")


def _java_major(home: Path) -> int:
    release = home / "release"
    if release.exists():
        found = re.search(r'JAVA_VERSION="(\d+)', release.read_text())
        if found:
            return int(found.group(1))
    found = re.search(r"(\d+)", home.name)
    return int(found.group(1)) if found else 0


def catalog_properties(settings: Settings) -> dict[str, str]:
    """Trino's Iceberg connector on the catalog K2 is configured with (same tables, same namespace as schema)."""
    properties = {"connector.name": "iceberg"}
    if settings.catalog_type == "rest":
        properties.update({"iceberg.catalog.type": "rest", "iceberg.rest-catalog.uri": str(settings.catalog_uri)})
        if settings.warehouse:
            properties["iceberg.rest-catalog.warehouse"] = settings.warehouse
        if settings.catalog_credential:
            properties.update({
                "iceberg.rest-catalog.security": "OAUTH2",
                "iceberg.rest-catalog.oauth2.credential": settings.catalog_credential,
                "iceberg.rest-catalog.oauth2.server-uri":
                    f"{str(settings.catalog_uri).rstrip('/')}/v1/oauth/tokens",
            })
    elif settings.catalog_uri and settings.catalog_uri.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        url = make_url(settings.catalog_uri)
        properties.update({
            "iceberg.catalog.type": "jdbc",
            "iceberg.jdbc-catalog.catalog-name": settings.catalog_name,  # rows of other catalogs stay invisible
            "iceberg.jdbc-catalog.driver-class": "org.postgresql.Driver",  # bundled in Trino's iceberg plugin
            "iceberg.jdbc-catalog.connection-url":
                f"jdbc:postgresql://{url.host}:{url.port or 5432}/{url.database}",
            "iceberg.jdbc-catalog.connection-user": url.username or "",
            "iceberg.jdbc-catalog.connection-password": url.password or "",
            "iceberg.jdbc-catalog.default-warehouse-dir": settings.resolved_warehouse,
        })
    else:
        raise ConfigError("Trino reads K2's tables through a PostgreSQL or REST catalog; the embedded SQLite "
                          "catalog is one process's file (set K2_CATALOG_URI=postgresql+psycopg://... or "
                          "K2_CATALOG_TYPE=rest)")
    warehouse = settings.warehouse or settings.resolved_warehouse
    if settings.s3_endpoint or warehouse.startswith("s3"):
        properties["fs.native-s3.enabled"] = "true"
        properties["s3.region"] = settings.s3_region
        if settings.s3_endpoint:
            properties.update({"s3.endpoint": settings.s3_endpoint, "s3.path-style-access": "true"})
        if settings.s3_access_key_id:
            properties.update({"s3.aws-access-key": settings.s3_access_key_id,
                               "s3.aws-secret-key": settings.s3_secret_access_key or ""})
    else:
        # Trino 476 reads file:// through its local file system, rooted at a plain directory (not local:///)
        properties.update({"fs.native-local.enabled": "true", "local.location": "/"})
    return properties


def render(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


@dataclass(frozen=True)
class TrinoServer:
    port: int
    pid: int
    etc: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(settings: Settings, workdir: Path, port: int, catalog: str = "iceberg", timeout: float = 240.0,
          memory: str = "1536M") -> tuple[TrinoServer, subprocess.Popen[bytes]]:
    """Run Trino on 127.0.0.1:`port` with one catalog on K2's tables, and wait until it serves queries."""
    if not installed(settings):
        raise TrinoError(f"Trino {settings.trino_version} is not fetched: run `k2 trino fetch` (783 MB from Maven "
                         "Central)")
    server = server_dir(settings)
    etc, data, plugins = workdir / "etc", workdir / "data", workdir / "plugins"
    (etc / "catalog").mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    plugins.mkdir(parents=True, exist_ok=True)
    if not (plugins / "iceberg").exists():  # only the connector K2 needs: less to load on a small machine
        (plugins / "iceberg").symlink_to(server / "plugin" / "iceberg")
    (etc / "node.properties").write_text(render({
        "node.environment": "k2", "node.id": "k2-trino-1", "node.data-dir": str(data),
        "node.bind-ip": "127.0.0.1", "node.internal-address": "127.0.0.1"}))
    (etc / "config.properties").write_text(render({
        "coordinator": "true", "node-scheduler.include-coordinator": "true", "http-server.http.port": str(port),
        "discovery.uri": f"http://127.0.0.1:{port}", "query.max-memory": "512MB",
        "query.max-memory-per-node": "512MB", "plugin.dir": str(plugins)}))
    (etc / "jvm.config").write_text("\n".join([
        "-server", f"-Xmx{memory}", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError", "-XX:ReservedCodeCacheSize=256M",
        "-Djdk.attach.allowAttachSelf=true", "-Dfile.encoding=UTF-8", "-XX:+EnableDynamicAgentLoading"]) + "\n")
    (etc / "log.properties").write_text("io.trino=WARN\n")
    (etc / "catalog" / f"{catalog}.properties").write_text(render(catalog_properties(settings)))
    home = java_home(settings)
    env = {**os.environ, "JAVA_HOME": str(home), "PATH": f"{home / 'bin'}:{os.environ.get('PATH', '')}"}
    log = open(workdir / "trino.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen([str(server / "bin" / "launcher"), "run", f"--etc-dir={etc}", f"--data-dir={data}"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    log.close()
    running = TrinoServer(port, process.pid, etc)
    probe = f'SELECT count(*) FROM "{catalog}"."{settings.namespace}"."trades"'
    deadline = time.monotonic() + timeout
    while (last := _not_ready(running, probe)) is not None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(running, process)
            tail = (workdir / "trino.log").read_text(errors="replace")[-3000:]
            raise TrinoError(f"Trino did not start on port {port} (exit {process.returncode}; {last}):\n{tail}")
        time.sleep(0.5)
    return running, process


def _not_ready(server: TrinoServer, probe: str) -> str | None:
    """Why the server cannot serve K2's tables yet, or None once it can. `/v1/info` says "not starting" a few
    seconds before the node has announced its catalogs; a scan in that window fails with "nodes is empty" (seen in
    CI; measured here: up to ~3 s after start), so readiness is a scan of K2's trades table. A lake without that
    table is ready once the catalog says so."""
    try:
        with urllib.request.urlopen(f"{server.url}/v1/info", timeout=2) as response:
            if json.loads(response.read()).get("starting", True):
                return "it is starting"
        _scalar(server, probe)
    except (OSError, ValueError) as exc:
        return f"it did not answer: {exc}"
    except TrinoError as exc:
        if exc.error_name not in ("TABLE_NOT_FOUND", "SCHEMA_NOT_FOUND"):
            return f"a scan of K2's trades table failed: {exc}"
    return None


def _scalar(server: TrinoServer, sql: str, timeout: float = 30.0) -> object:
    """The first value of a statement's answer, through Trino's HTTP client protocol (no client library needed)."""
    request = urllib.request.Request(f"{server.url}/v1/statement", data=sql.encode(),
                                     headers={"X-Trino-User": "k2"}, method="POST")
    deadline = time.monotonic() + timeout
    first: object = None
    while True:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            page = json.loads(response.read())
        if "error" in page:
            raise TrinoError(str(page["error"].get("message")), page["error"].get("errorName", ""))
        if first is None and page.get("data"):
            first = page["data"][0][0]
        if "nextUri" not in page:
            return first
        if time.monotonic() > deadline:
            raise TrinoError(f"Trino did not answer {sql!r} within {timeout:.0f} s")
        request = urllib.request.Request(page["nextUri"], headers={"X-Trino-User": "k2"})


def stop(server: TrinoServer, process: subprocess.Popen[bytes] | None = None, grace: float = 30.0) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if process is not None:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            process.wait()
