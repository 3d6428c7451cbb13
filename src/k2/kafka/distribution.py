"""Real Apache Kafka as a third local broker: the pinned `org.apache.kafka:kafka_2.13` jars and their dependencies
from Maven Central, fetched only by an explicit `k2 broker fetch --kind kafka` (Maven and a Java 17+ runtime
required), then run as one KRaft node (broker + controller) on loopback.

Facts behind the choices (measured here, docs/decisions/0001-local-broker.md): 45 jars, 43 MB; the slf4j 1.x
binding for log4j2 is not among Kafka's own dependencies and without it the broker logs nothing; C1-only JIT and the
serial collector halve the CPU a start costs (~5 CPU-s) on a 2-core machine; RSS ~0.3 GB.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from k2.errors import BrokerError
from k2.filelock import exclusive

LOG4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.25.5")
_COMPLETE = ".complete"


def log4j_config(log_file: str, quiet: Sequence[str]) -> str:
    """A log4j2 configuration: everything at INFO to `log_file` (a log4j lookup, e.g. a system property with a
    default), the `quiet` loggers at WARN, nothing to stdout; log4j's own shutdown hook off, or the JVM's last
    shutdown lines are lost."""
    loggers = "".join(f'\n    <Logger name="{name}" level="WARN"/>' for name in quiet)
    return f"""<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <File name="file" fileName="{log_file}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>{loggers}
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


# the broker's log goes under its data dir
_LOG4J = log4j_config("${sys:kafka.logs.dir:-.}/server.log", ["state.change.logger", "kafka.request.logger"])

_SERVER = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
num.network.threads=2
num.io.threads=2
background.threads=2
"""


def installed(dist: Path, version: str) -> bool:
    return (dist / _COMPLETE).exists() and (dist / "libs" / f"kafka_2.13-{version}.jar").exists()


def fetch(dist: Path, version: str, maven: str | None = None) -> Path:
    """Fetch Kafka `version` and its runtime dependencies into `dist`/libs with Maven (idempotent; concurrent
    fetches into one directory wait for each other)."""
    if installed(dist, version):
        return dist
    with exclusive(dist):
        return _fetch(dist, version, maven)


def _fetch(dist: Path, version: str, maven: str | None) -> Path:
    if installed(dist, version):
        return dist
    copy_dependencies(dist, "kafka-broker-libs", [("org.apache.kafka", "kafka_2.13", version), LOG4J_BINDING], maven)
    (dist / "log4j2.xml").write_text(_LOG4J)
    (dist / _COMPLETE).write_text(version)
    return dist


def copy_dependencies(dist: Path, name: str, artifacts: Sequence[tuple[str, str, str]],
                      maven: str | None = None) -> None:
    """Resolve `artifacts` ((group, artifact, version), with their runtime dependencies) with Maven into
    `dist`/libs, replacing it whole, through a pom `name` written there (the caller holds the lock)."""
    what = ":".join(artifacts[0])
    maven = maven or shutil.which("mvn")
    if maven is None:
        raise BrokerError(f"fetching {what} needs Maven (`mvn` on PATH; Debian: apt-get install maven) and a Java "
                          "17+ runtime")
    java_binary()  # fail before a download that cannot run
    dist = dist.resolve()  # Maven runs in `dist`: a relative output directory would land inside it
    dist.mkdir(parents=True, exist_ok=True)
    dependencies = "".join(f"\n    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
                           f"<version>{version}</version></dependency>" for group, artifact, version in artifacts)
    (dist / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n  <modelVersion>4.0.0</modelVersion>\n'
        f"  <groupId>k2</groupId><artifactId>{name}</artifactId><version>1</version><packaging>pom</packaging>\n"
        f"  <dependencies>{dependencies}\n  </dependencies>\n</project>\n")
    staging = dist / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    done = subprocess.run([maven, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
                          cwd=dist, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
        raise BrokerError(f"Maven could not fetch {what}:\n" + "\n".join(tail))
    shutil.rmtree(dist / "libs", ignore_errors=True)
    staging.rename(dist / "libs")


def size_bytes(dist: Path) -> int:
    return sum(p.stat().st_size for p in (dist / "libs").glob("*.jar"))


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home, "bin", "java")) if home and Path(home, "bin", "java").exists() else shutil.which("java")
    if found is None:
        raise BrokerError("Apache Kafka needs a Java 17+ runtime (`java` on PATH or JAVA_HOME; Debian: "
                          "apt-get install openjdk-17-jre-headless)")
    return found


def prepare(dist: Path, version: str, data_dir: Path, port: int, controller_port: int,
            jvm_options: list[str], advertised_port: int | None = None) -> list[str]:
    """Write the node's config for these ports (ports may change between starts), format its log directory on
    first use, and return the command that runs it. `advertised_port`: the port clients are told to use (a
    proxy in front of the broker), if not its own."""
    if not installed(dist, version):
        raise BrokerError(f"Apache Kafka {version} is not fetched into {dist}: run `k2 broker fetch --kind kafka` "
                          "(Maven Central, ~45 MB)")
    logs, data = data_dir / "logs", data_dir / "data"
    logs.mkdir(parents=True, exist_ok=True)
    config = data_dir / "server.properties"
    config.write_text(_SERVER.format(port=port, controller=controller_port, data=data,
                                     advertised=advertised_port or port))
    base = [java_binary(), *jvm_options, "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={dist / 'log4j2.xml'}", f"-Dkafka.logs.dir={logs}",
            "-cp", str(dist / "libs" / "*")]
    if not (data / "meta.properties").exists():
        done = subprocess.run([*base, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(config)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"formatting Kafka's log directory {data} failed: {done.stdout}{done.stderr}"[-2000:])
    return [*base, "kafka.Kafka", str(config)]


def new_cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's own `Uuid.randomUuid()`, never one whose URL-safe base64 starts with
    "-": the storage tool's argument parser would read it as an option (1 start in 64 failed before this)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
