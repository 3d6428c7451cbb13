"""Chaos: a bad network between ingest and the broker. The broker advertises a proxy the test controls, so every
connection goes through it: for 12 s each chunk is delayed, a third of new connections are refused, and every
open connection is cut every 2 s. The running ingest is never restarted; once the network heals it lands
everything once. (noida-db advertises the address it binds, so it cannot sit behind the proxy: Tansu and Kafka.)"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from k2.kafka.broker import free_port, start_broker, stop_process
from k2.query.engine import QueryEngine
from k2.settings import BrokerKind, Settings
from tests.chaos.proxy import Proxy
from tests.chaos.workload import (
    assert_every_tick_once,
    landed_rows,
    produce,
    record_recovery,
    start_ingest,
    trades,
    wait_for,
)
from tests.services import brokers_under_test

pytestmark = pytest.mark.slow
BAD_SECONDS = 12.0


def _flap(proxy: Proxy, until: float) -> None:
    while time.monotonic() < until:
        time.sleep(2.0)
        proxy.down()
        time.sleep(0.3)
        proxy.up()


@pytest.mark.parametrize("kind", [k for k in brokers_under_test() if k != "noida"])
def test_delay_and_loss_between_consumer_and_broker_cost_nothing(kind: BrokerKind, tmp_path: Path) -> None:
    broker_port = free_port()
    with Proxy(broker_port) as proxy:
        state, process = start_broker(kind, tmp_path / "broker", broker_port, advertised_port=proxy.port)
        tag = uuid.uuid4().hex[:8]
        settings = Settings(home=tmp_path / "home", kafka_bootstrap=proxy.address, broker=kind,
                            topic_trades=f"chaos-{tag}", consumer_group=f"chaos-{tag}")
        first, second = trades(1, 6_000), trades(2, 30_000)
        try:
            produce(settings, first)
            # never "idle" within the test: through the bad network the producer may deliver nothing for longer
            # than any idle limit (a deployed `k2 ingest` has none); it is stopped with SIGTERM at the end
            ingest = start_ingest(settings, idle_seconds=600)
            wait_for(lambda: landed_rows(settings) == first.num_rows, 120, "phase 1 landed", ingest)
            proxy.delay, proxy.drop = 0.05, 0.33
            cut_before = proxy.cut
            flapper = threading.Thread(target=_flap, args=(proxy, time.monotonic() + BAD_SECONDS))
            flapper.start()
            producer = threading.Thread(target=produce, args=(settings, second))  # through the bad network too
            producer.start()
            flapper.join()
            cut = proxy.cut - cut_before
            proxy.delay, proxy.drop = 0.0, 0.0
            healed = time.monotonic()
            producer.join(timeout=300)
            wait_for(lambda: landed_rows(settings) == first.num_rows + second.num_rows, 180, "all landed", ingest)
            record_recovery(f"network delay + loss ({kind}), {BAD_SECONDS:g} s", time.monotonic() - healed)
            total = first.num_rows + second.num_rows
            wait_for(lambda: sum(q["landed"] for q in QueryEngine(settings).quality().to_pylist()) == total, 60,
                     "the last batch's quality counts recorded", ingest)  # they follow the commit
            assert ingest.poll() is None  # the same process throughout: never restarted, never failed
            ingest.terminate()
            _, err = ingest.communicate(timeout=120)
            assert "Traceback" not in err, err
        finally:
            stop_process(state, process)
        assert cut >= 5, cut  # the consumer's connections (fetches, group heartbeats) were cut again and again
        assert_every_tick_once(settings, [first, second])
