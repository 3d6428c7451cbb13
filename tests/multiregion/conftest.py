"""The multi-region drill's jars: Apache Kafka (the brokers of both regions) and MirrorMaker 2's `connect-mirror`,
fetched once per session from Maven Central, explicitly, into .cache/ of the checkout (as tests/conftest.py does for
Kafka)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k2.kafka import distribution, mirror
from k2.settings import Settings


@pytest.fixture(scope="session")
def mirror_jars() -> tuple[Path, Path]:
    """(Kafka's dist, connect-mirror's dist beside it)."""
    version = Settings().kafka_version
    kafka = Path(os.environ.setdefault(
        "K2_KAFKA_DIST", str(Path(__file__).resolve().parents[2] / ".cache" / f"kafka-{version}")))
    distribution.fetch(kafka, version)
    return kafka, mirror.fetch(mirror.default_dist(kafka))
