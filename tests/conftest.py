"""Shared fixtures: a real local broker (Tansu and noida-db, each test runs on both), per-test settings, and the
production-profile services (PostgreSQL, SeaweedFS S3 + REST catalog), started once per session when a test asks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.kafka.broker import BrokerState, ManagedBroker
from k2.settings import BrokerKind, Settings
from tests.services import Postgres, Seaweed, brokers_under_test, running_postgres, running_seaweed


def pytest_sessionstart(session: pytest.Session) -> None:
    """Real Apache Kafka is one of the brokers under test: its jars are fetched here, once, explicitly (K2 itself
    never downloads behind a user's back), into K2_KAFKA_DIST (default: .cache/ of the checkout, which Maven's
    own ~/.m2 cache backs)."""
    if "kafka" in brokers_under_test():
        from k2.kafka import distribution

        settings = Settings()
        dist = os.environ.setdefault(
            "K2_KAFKA_DIST", str(Path(__file__).resolve().parent.parent / ".cache" / f"kafka-{settings.kafka_version}"))
        distribution.fetch(Path(dist), settings.kafka_version)


@pytest.fixture(scope="session", params=brokers_under_test())
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as service:
        yield service


PROFILES = ["sqlite", "postgres", "rest-s3"]


def on_profile(settings: Settings, profile: str, request: pytest.FixtureRequest) -> Settings:
    """`settings` moved onto a lake profile: the embedded SQLite default, a PostgreSQL catalog (a database of this
    test's own), or SeaweedFS's Iceberg REST catalog over its S3 (a namespace of this test's own)."""
    if profile == "sqlite":
        return settings
    if profile == "postgres":
        server: Postgres = request.getfixturevalue("postgres")
        return settings.model_copy(update={"catalog_uri": server.uri(server.create_database())})
    service: Seaweed = request.getfixturevalue("seaweed")
    return Settings(**{
        **settings.model_dump(exclude_defaults=True), "catalog_type": "rest", "catalog_uri": service.catalog_uri,
        "catalog_credential": f"{service.access_key}:{service.secret_key}", "warehouse": f"s3://{service.bucket}",
        "s3_endpoint": service.s3_endpoint, "s3_access_key_id": service.access_key,
        "s3_secret_access_key": service.secret_key, "namespace": f"m{uuid.uuid4().hex[:10]}",
    })


@pytest.fixture(scope="session")
def profile_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerState]:
    """One broker for the lake-profile tests: they vary the catalog and the storage, and the Kafka-facing suite
    already runs on every broker (three brokers x three profiles would triple their time for nothing new)."""
    kind: BrokerKind = brokers_under_test()[0]  # type: ignore[assignment]
    with ManagedBroker(kind, tmp_path_factory.mktemp(f"profile-broker-{kind}")) as state:
        yield state


@pytest.fixture(params=PROFILES)
def profile_settings(request: pytest.FixtureRequest, home: Path, profile_broker: BrokerState) -> Settings:
    """Settings with topics of this test's own on the profile broker, on each lake profile in turn."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        home=home, kafka_bootstrap=profile_broker.bootstrap, broker=profile_broker.kind,
        topic_trades=f"trades-{tag}", topic_quotes=f"quotes-{tag}", topic_reference=f"reference-{tag}",
        topic_corporate_actions=f"actions-{tag}", topic_dlq=f"dlq-{tag}", consumer_group=f"k2-test-{tag}",
        ingest_idle_seconds=2.0,
    )
    return on_profile(settings, request.param, request)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"broker", "profile_broker"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)
