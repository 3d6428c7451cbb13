"""Shared fixtures: a real local broker (Tansu and noida-db, each test runs on both) and per-test settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.kafka.broker import BrokerState, ManagedBroker
from k2.settings import BrokerKind, Settings

ALL_BROKERS: list[BrokerKind] = ["tansu", "noida"]


def _brokers() -> list[BrokerKind]:
    """K2_TEST_BROKER=tansu|noida limits the run to one broker (default: both)."""
    chosen = os.environ.get("K2_TEST_BROKER")
    return [chosen] if chosen in ALL_BROKERS else ALL_BROKERS  # type: ignore[list-item]


@pytest.fixture(scope="session", params=_brokers())
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerState]:
    kind: BrokerKind = request.param
    with ManagedBroker(kind, tmp_path_factory.mktemp(f"broker-{kind}")) as state:
        yield state


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "k2home"


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings without a broker (lake and query only)."""
    return Settings(home=home)


@pytest.fixture
def kafka_settings(home: Path, broker: BrokerState) -> Settings:
    """Settings on the shared test broker, with topics and group of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        broker=broker.kind,
        topic_trades=f"trades-{tag}",
        topic_quotes=f"quotes-{tag}",
        topic_reference=f"reference-{tag}",
        topic_corporate_actions=f"actions-{tag}",
        topic_dlq=f"dlq-{tag}",
        consumer_group=f"k2-test-{tag}",
        ingest_idle_seconds=2.0,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
