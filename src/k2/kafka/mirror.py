"""MirrorMaker 2 between two K2 regions: Apache Kafka's own `connect-mirror` jars from Maven Central (fetched
like the broker's, kafka/distribution.py), the mm2.properties K2 runs it with (the drill and deploy/ ship the same
text), the dedicated MirrorMaker process, and the checkpoints it writes, decoded.

Facts behind the choices (measured here, docs/multi-region.md): `connect-mirror` 4.4.0 is not on Maven Central,
4.3.1 is (61 jars, 36 MB) and talks to 4.4.0 brokers; the default replication policy names region A's topic
`A.<topic>` on B, so both directions can run at once without a loop; offset syncs are kept on the target, so the
region that takes over holds everything a failover reads.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from k2.errors import BrokerError
from k2.filelock import exclusive
from k2.kafka.broker import die_with_parent_signal
from k2.kafka.config import client_config
from k2.kafka.distribution import LOG4J_BINDING, copy_dependencies, java_binary, log4j_config

CONNECT_MIRROR_VERSION = "4.3.1"  # the newest org.apache.kafka:connect-mirror on Maven Central
TOPICS = r"k2\..*|heartbeats"  # K2's topics (k2.trades.v1, ...) and MM2's heartbeats; never a remote topic (A.k2…)
JVM_OPTIONS = "-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1"
_COMPLETE = ".complete"
_STARTED = "Kafka MirrorMaker started"

_RUNTIME, _MIRROR = "org.apache.kafka.connect.runtime", "org.apache.kafka.connect.mirror"
# to the file named by -Dk2.mirror.log; the clients' and Connect's dumps of every config they build stay out
_LOG4J = log4j_config("${sys:k2.mirror.log:-mirrormaker.log}", [
    "org.apache.kafka.clients",
    "org.apache.kafka.common",
    f"{_RUNTIME}.WorkerConfig",
    f"{_RUNTIME}.distributed.DistributedConfig",
    f"{_RUNTIME}.ConnectorConfig",
    f"{_RUNTIME}.SourceConnectorConfig",
    f"{_RUNTIME}.TaskConfig",
    f"{_MIRROR}.MirrorMakerConfig",
    f"{_MIRROR}.MirrorConnectorConfig",
    f"{_MIRROR}.MirrorSourceConfig",
    f"{_MIRROR}.MirrorCheckpointConfig",
    f"{_MIRROR}.MirrorHeartbeatConfig",
    f"{_MIRROR}.MirrorSourceTaskConfig",
    f"{_MIRROR}.MirrorCheckpointTaskConfig",
])


# ------------------------------------------------------------------------------------------------- the jars


def default_dist(kafka_dist: Path, version: str = CONNECT_MIRROR_VERSION) -> Path:
    """Beside the broker's jars: `<kafka dist>/../connect-mirror-<version>`."""
    return kafka_dist.parent / f"connect-mirror-{version}"


def installed(dist: Path, version: str = CONNECT_MIRROR_VERSION) -> bool:
    return (dist / _COMPLETE).exists() and (dist / "libs" / f"connect-mirror-{version}.jar").exists()


def fetch(dist: Path, version: str = CONNECT_MIRROR_VERSION, maven: str | None = None) -> Path:
    """Fetch `connect-mirror` and its runtime dependencies into `dist`/libs with Maven (idempotent; concurrent
    fetches into one directory wait for each other). Never implicit: the caller asks for it."""
    if installed(dist, version):
        return dist
    with exclusive(dist):
        if not installed(dist, version):
            copy_dependencies(dist, "connect-mirror-libs", [("org.apache.kafka", "connect-mirror", version),
                                                            LOG4J_BINDING], maven)
            (dist / "log4j2.xml").write_text(_LOG4J)
            (dist / _COMPLETE).write_text(version)
    return dist


# ------------------------------------------------------------------------------------------------ the config


def render(clusters: Mapping[str, str], flows: Sequence[tuple[str, str]], *, topics: str = TOPICS,
           groups: str = ".*", replication_factor: int = 1, interval_seconds: int = 1) -> str:
    """mm2.properties for `clusters` (alias → bootstrap servers) replicating along `flows` ((source, target)
    pairs; every other pair is off). `interval_seconds` paces topic/group discovery, checkpoints, group offset
    syncs, heartbeats and the source offsets' flush: 1 s makes a drill fast; production can afford 5 to 30."""
    unknown = {alias for flow in flows for alias in flow} - set(clusters)
    if unknown:
        raise ValueError(f"flows name clusters that are not defined: {sorted(unknown)}")
    lines = [
        f"# MirrorMaker 2 (dedicated mode) between K2 regions {', '.join(clusters)}: k2.kafka.mirror.render wrote it",
        "# (docs/multi-region.md); run one per target region: MirrorMaker mm2.properties --clusters <that region>",
        f"clusters = {', '.join(clusters)}",
        *(f"{alias}.bootstrap.servers = {bootstrap}" for alias, bootstrap in clusters.items()),
        *(f"{source}->{target}.enabled = {str((source, target) in flows).lower()}"
          for source in clusters for target in clusters if source != target),
        "# what is replicated: K2's topics to `<source>.<topic>` (the default replication policy never sends a",
        "# remote topic back where it came from), every consumer group's offsets translated into checkpoints",
        f"topics = {_escaped(topics)}",
        f"groups = {_escaped(groups)}",
        "replication.policy.class = org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
        "emit.checkpoints.enabled = true",
        "sync.group.offsets.enabled = true",
        "emit.heartbeats.enabled = true",
        "sync.topic.acls.enabled = false",
        "# offset syncs on the target: the region that takes over holds all a failover reads",
        "offset-syncs.topic.location = target",
        "tasks.max = 1",
        "# the plugins' ServiceLoader manifests only: no classpath scan (~5 CPU-s of a start on 2 cores)",
        "plugin.discovery = service_load",
        *(f"{alias}.plugin.discovery = service_load" for alias in clusters),  # each herder's worker reads its own
        f"refresh.topics.interval.seconds = {interval_seconds}",
        f"refresh.groups.interval.seconds = {interval_seconds}",
        f"emit.checkpoints.interval.seconds = {interval_seconds}",
        f"sync.group.offsets.interval.seconds = {interval_seconds}",
        f"emit.heartbeats.interval.seconds = {interval_seconds}",
        f"offset.flush.interval.ms = {interval_seconds * 1000}",
        "# one copy of everything while each region runs one broker; 3 on a real cluster",
        *(f"{name}.replication.factor = {replication_factor}" for name in (
            "checkpoints.topic", "heartbeats.topic", "offset-syncs.topic", "offset.storage", "status.storage",
            "config.storage")),
        f"replication.factor = {replication_factor}",
    ]
    return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    """A properties-file value: Java's loader reads a backslash as an escape (`k2\\.` would become `k2.`)."""
    return value.replace("\\", "\\\\")


# ----------------------------------------------------------------------------------------------- the process


@dataclass
class MirrorMaker:
    """A running dedicated MirrorMaker 2 (its own process group; `stop()` ends it)."""

    process: subprocess.Popen[bytes]
    log: Path

    def started(self) -> bool:
        """Its herders are up (connectors and tasks start after this, within seconds)."""
        return self.log.exists() and _STARTED in self.log.read_text(errors="replace")

    def wait_started(self, timeout: float = 120.0) -> float:
        """Seconds from now until it says it started; a BrokerError with its log's tail if it exits or hangs."""
        began = time.monotonic()
        while not self.started():
            if self.process.poll() is not None or time.monotonic() - began > timeout:
                tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                state = f"exited with code {self.process.returncode}" if self.process.poll() is not None \
                    else f"did not start within {timeout:.0f}s"
                self.stop()
                raise BrokerError(f"MirrorMaker {state}:\n{tail}")
            time.sleep(0.1)
        return time.monotonic() - began

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (it commits its source offsets on the way out), SIGKILL after `grace` seconds."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)


def start(dist: Path, config: Path, log: Path, clusters: Sequence[str] = (), jvm_options: str = JVM_OPTIONS,
          die_with_parent: bool = False) -> MirrorMaker:
    """Run `org.apache.kafka.connect.mirror.MirrorMaker config` in its own process group, logging to `log`.
    `clusters`: drive only the flows into these (one MirrorMaker per target region); all of them by default."""
    if not installed(dist):
        raise BrokerError(f"MirrorMaker 2 is not fetched into {dist}: k2.kafka.mirror.fetch (Maven Central, ~36 MB)")
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [java_binary(), *jvm_options.split(), "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={dist / 'log4j2.xml'}", f"-Dk2.mirror.log={log}",
               "-cp", str(dist / "libs" / "*"), "org.apache.kafka.connect.mirror.MirrorMaker", str(config)]
    if clusters:
        command += ["--clusters", *clusters]
    with open(log.with_suffix(".out"), "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True,
                                   preexec_fn=die_with_parent_signal if die_with_parent else None)
    return MirrorMaker(process, log)


# --------------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """One record of `<source>.checkpoints.internal` on the target: where `group` stood on the source
    (`upstream_offset`) and the offset of the same record in the target's copy of `topic` (`downstream_offset`).
    `topic` is the target's name for it (`A.k2.trades.v1`)."""

    group: str
    topic: str
    partition: int
    upstream_offset: int
    downstream_offset: int
    metadata: str = ""


def _string(buffer: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", buffer, at)
    return buffer[at + 2:at + 2 + length].decode(), at + 2 + length


def decode_checkpoint(key: bytes, value: bytes) -> Checkpoint:
    """Kafka's Checkpoint struct: key = (group STRING, topic STRING, partition INT32); value = (version INT16,
    upstreamOffset INT64, offset INT64, metadata STRING); big-endian, strings as an INT16 length + UTF-8."""
    group, at = _string(key, 0)
    topic, at = _string(key, at)
    (partition,) = struct.unpack_from(">i", key, at)
    version, upstream, downstream = struct.unpack_from(">hqq", value, 0)
    if version != 0:
        raise ValueError(f"checkpoint value version {version}: only version 0 is known")
    metadata, _ = _string(value, 18)
    return Checkpoint(group, topic, partition, upstream, downstream, metadata)


def checkpoints_topic(source: str) -> str:
    return f"{source}.checkpoints.internal"


def read_checkpoints(bootstrap: str, source: str, group: str | None = None,
                     timeout: float = 15.0) -> dict[tuple[str, str, int], Checkpoint]:
    """The newest checkpoint per (group, topic, partition) that `source`'s MirrorMaker wrote on the cluster at
    `bootstrap` (empty if none yet); only `group`'s when given. Reads the topic to its end as of the call."""
    consumer = Consumer({**client_config(bootstrap), "group.id": "k2-mirror-checkpoints",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        topic = checkpoints_topic(source)
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in metadata.partitions}
        left = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in left])
        found: dict[tuple[str, str, int], Checkpoint] = {}
        deadline = time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic}: not read to its end within {timeout:.0f}s")
            message = consumer.poll(0.2)
            if message is None:
                continue
            partition, error = message.partition() or 0, message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    left.discard(partition)
                continue
            if (message.offset() or 0) + 1 >= ends[partition]:
                left.discard(partition)
            key, value = message.key(), message.value()
            if key is None or value is None:  # a tombstone: compaction removes the key
                continue
            checkpoint = decode_checkpoint(key, value)
            if group is None or checkpoint.group == group:
                found[(checkpoint.group, checkpoint.topic, checkpoint.partition)] = checkpoint
        return found
    except KafkaException as exc:
        raise BrokerError(f"reading {checkpoints_topic(source)} at {bootstrap}: {exc}") from None
    finally:
        consumer.close()


def translated_offsets(bootstrap: str, source: str, group: str, topic: str) -> dict[int, int]:
    """Partition → the offset in the target's `topic` (`A.k2.trades.v1`) where `group` resumes after a failover:
    the newest checkpoints' downstream offsets (a consumer started there loses nothing; it may see again what it
    had read after the last offset sync)."""
    return {c.partition: c.downstream_offset for c in read_checkpoints(bootstrap, source, group).values()
            if c.topic == topic}
