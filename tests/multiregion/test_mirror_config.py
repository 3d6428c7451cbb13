"""MirrorMaker 2's configuration and checkpoints without a JVM: the checkpoint decoder on records MirrorMaker 4.3.1
wrote (captured from the drill's B broker), the properties K2 renders, and deploy/'s copy of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k2.kafka import mirror

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# key, value of three records of A.checkpoints.internal on B, as MirrorMaker wrote them (group k2-ingest.trades)
REAL = [
    ("00106b322d696e676573742e747261646573000e412e6b322e7472616465732e763100000001",
     "0000000000000000030600000000000002c40000", (1, 774, 708)),
    ("00106b322d696e676573742e747261646573000e412e6b322e7472616465732e763100000000",
     "000000000000000002ed00000000000002c40000", (0, 749, 708)),
    ("00106b322d696e676573742e747261646573000e412e6b322e7472616465732e763100000003",
     "000000000000000003f300000000000003f30000", (3, 1011, 1011)),
]


@pytest.mark.parametrize(("key", "value", "expected"), REAL)
def test_checkpoints_decode_as_kafka_writes_them(key: str, value: str, expected: tuple[int, int, int]) -> None:
    checkpoint = mirror.decode_checkpoint(bytes.fromhex(key), bytes.fromhex(value))
    assert (checkpoint.group, checkpoint.topic, checkpoint.metadata) == ("k2-ingest.trades", "A.k2.trades.v1", "")
    assert (checkpoint.partition, checkpoint.upstream_offset, checkpoint.downstream_offset) == expected


def test_an_unknown_checkpoint_version_is_refused() -> None:
    key, value, _ = REAL[0]
    with pytest.raises(ValueError, match="version 1"):
        mirror.decode_checkpoint(bytes.fromhex(key), bytes.fromhex("0001" + value[4:]))


def _properties(text: str) -> dict[str, str]:
    """Parsed as Java's Properties would: `key = value`, a backslash escapes the next character."""
    pairs = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip().replace("\\\\", "\\")
    return pairs


def test_render_names_every_flow_and_keeps_the_topic_pattern() -> None:
    properties = _properties(mirror.render({"A": "a:9092", "B": "b:9092", "C": "c:9092"}, [("A", "B")]))
    assert properties["A->B.enabled"] == "true"
    assert {properties[f"{s}->{t}.enabled"] for s, t in [("B", "A"), ("A", "C"), ("C", "B")]} == {"false"}
    assert properties["topics"] == mirror.TOPICS  # Java's loader turns `\\.` back into `\.`
    assert properties["A.bootstrap.servers"] == "a:9092"
    assert properties["offset-syncs.topic.location"] == "target"
    with pytest.raises(ValueError, match="not defined"):
        mirror.render({"A": "a:9092"}, [("A", "B")])


def test_the_compose_stack_runs_the_configuration_the_drill_runs() -> None:
    """deploy/mirrormaker/mm2.properties is what render() gives for the compose stack's addresses (region B is the
    stack, region A its peer): the drill's configuration, nothing edited by hand."""
    shipped = (DEPLOY / "mirrormaker" / "mm2.properties").read_text()
    assert shipped == mirror.render({"A": "region-a-kafka:9092", "B": "kafka:9092"}, [("A", "B"), ("B", "A")])
    service = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["mirrormaker"]
    assert service["image"] == "apache/kafka:4.4.0"
    assert service["command"][1:] == ["/etc/mirrormaker/mm2.properties", "--clusters", "B"]
