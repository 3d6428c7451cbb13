"""Consumer lag measured from the broker (k2.kafka.lag): what the ingest group has not landed yet, on every broker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import CollectorRegistry, generate_latest

from k2.ingest.pipeline import ingest, produce_table
from k2.kafka.broker import BrokerState, free_port, start_broker, stop_process
from k2.kafka.lag import LagCollector, measure_lag
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import BrokerKind, Settings
from k2.sources.generator import generate_trades
from tests.services import brokers_under_test

TRADES = 6_000


def _lag(settings: Settings) -> dict[Dataset, tuple[int, int]]:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    return {item.dataset: (item.end_offset, item.lag) for item in measure_lag(settings, admin, Dataset, 5.0)}


def _landed(settings: Settings) -> int:
    return int(QueryEngine(settings).sql("SELECT count(*) AS n FROM trades").table.column("n")[0].as_py())


def test_lag_counts_records_not_landed_yet(kafka_settings: Settings, broker: BrokerState,
                                           request: pytest.FixtureRequest) -> None:
    if broker.kind == "tansu":  # strict: should Tansu fix its high watermark, this starts passing and says so
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="Tansu's ListOffsets(latest) is the last batch's start + 1, not the log end"))
    bootstrap = broker.bootstrap
    produce_table(kafka_settings, bootstrap, generate_trades(dt.date(2026, 1, 5), ["AAA", "BBB", "CCC"], TRADES,
                                                             seed=3), chunk_rows=1_000)
    end, lag = _lag(kafka_settings)[Dataset.TRADES]
    assert (end, lag) == (TRADES, TRADES)  # nothing consumed: the group has committed nothing

    ingest(kafka_settings, bootstrap, Dataset.TRADES, max_messages=TRADES // 2)
    landed = _landed(kafka_settings)
    assert 0 < landed < TRADES
    assert _lag(kafka_settings)[Dataset.TRADES] == (TRADES, TRADES - landed)  # committed = landed, exactly

    ingest(kafka_settings, bootstrap, Dataset.TRADES, idle_seconds=1.0)
    assert _landed(kafka_settings) == TRADES
    assert _lag(kafka_settings)[Dataset.TRADES] == (TRADES, 0)


def test_collector_exports_lag_and_says_when_the_broker_is_gone(kafka_settings: Settings,
                                                                  broker: BrokerState) -> None:
    produce_table(kafka_settings, broker.bootstrap, generate_trades(dt.date(2026, 1, 5), ["AAA"], 100, seed=1))
    registry = CollectorRegistry()
    registry.register(LagCollector(kafka_settings, broker.bootstrap, [Dataset.TRADES], cache_seconds=0))
    text = generate_latest(registry).decode()
    assert "k2_kafka_up 1.0" in text
    group = f"{kafka_settings.consumer_group}.trades"
    assert f'k2_consumer_lag{{dataset="trades",group="{group}",topic="{kafka_settings.topic_trades}"}}' in text

    gone = CollectorRegistry()
    gone.register(LagCollector(kafka_settings, f"127.0.0.1:{free_port()}", [Dataset.TRADES], timeout=0.5))
    text = generate_latest(gone).decode()
    assert "k2_kafka_up 0.0" in text and "k2_consumer_lag{" not in text  # no stale or invented lag


@pytest.mark.parametrize("kind", brokers_under_test())
def test_lag_is_measured_on_a_broker_that_just_started(kind: BrokerKind, tmp_path: Path) -> None:
    """Right after a start and a topic's creation, real Kafka answers "not leader" and "coordinator loading" for
    a while (measured 3 out of 3 fresh starts; CI failed on it): the measurement waits that out, it does not fail."""
    state, process = start_broker(kind, tmp_path / "broker")
    try:
        settings = Settings(kafka_bootstrap=state.bootstrap, home=tmp_path / "home")
        admin = AdminClient({"bootstrap.servers": state.bootstrap})
        admin.create_topics([NewTopic(settings.topic_trades, 4, 1)])[settings.topic_trades].result(30)
        (measured,) = measure_lag(settings, admin, [Dataset.TRADES], 10.0)
        assert (measured.topic, measured.end_offset, measured.lag) == (settings.topic_trades, 0, 0)
    finally:
        stop_process(state, process)
