"""The API's hot cache over real HTTP: a repeated query is answered from the cache with the same bytes, and any
new commit to a table it reads (an append, a rollback) is a miss that answers from the new state, never stale."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.api.app import create_app
from k2.lake import snapshots
from k2.lake.catalog import ensure_table, open_catalog
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades
from tests.test_api import api_server, get
from tests.test_ratelimit import redis_url  # noqa: F401 - a fixture
from tests.test_replay import _build, _land

BARS = ("/v1/bars", {"symbols": "AAA", "interval": "1h"})
LAST = ("/v1/trades/last", {"symbols": "AAA", "at": "2026-03-05T00:00:00Z"})


def _serve(settings: Settings) -> Iterator[str]:
    with api_server(create_app(settings)) as base:
        yield base


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    settings, _, _ = _build(tmp_path / "home")
    return settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})


class Outcomes:
    """Cache hits and misses of a route since this object was made (the metrics are the process's)."""

    def __init__(self, base: str, route: str) -> None:
        self._base, self._route = base, route
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        _, data, _ = get(self._base, "/metrics", accept="text/plain")
        pattern = rf'k2_api_cache_total\{{outcome="(\w+)",route="{re.escape(self._route)}"\}} (\S+)'
        return {outcome: float(value) for outcome, value in re.findall(pattern, data.decode())}

    def __call__(self) -> dict[str, float]:
        now = self._read()
        return {k: now.get(k, 0.0) - self._start.get(k, 0.0) for k in ("hit", "miss", "shared_hit")
                if k != "shared_hit" or now.get(k, 0.0) - self._start.get(k, 0.0)}


def test_a_repeat_is_a_hit_and_a_new_commit_is_a_miss(lake: Settings) -> None:
    for base in _serve(lake):
        path, params = BARS
        outcomes = Outcomes(base, path)
        first = get(base, path, params)
        second = get(base, path, params)
        assert first[0] == second[0] == 200 and first[1] == second[1]
        assert outcomes() == {"miss": 1.0, "hit": 1.0}

        # a later trade of AAA lands: the next answer is computed anew and holds it
        late = generate_trades(dt.date(2026, 3, 4), ["AAA"], 50, seed=9)
        _land(lake, Dataset.TRADES, late, commits=1)
        third = get(base, path, params)
        assert third[0] == 200 and third[1] != second[1]
        assert outcomes() == {"miss": 2.0, "hit": 1.0}
        expected = QueryEngine(lake).bars(["AAA"], "1h")
        assert b'"2026-03-04T' in third[1] and len(expected) == third[1].count(b'"bar_start"')

        # a rollback to the state before is again a new version: a miss, and the first answer again
        table = ensure_table(open_catalog(lake), lake, Dataset.TRADES)
        history = [s.snapshot_id for s in table.snapshots()]
        snapshots.rollback(table, history[-2])
        fourth = get(base, path, params)
        assert fourth[1] == first[1] and outcomes()["miss"] == 3.0


def test_formats_and_parameters_are_separate_entries(lake: Settings) -> None:
    for base in _serve(lake):
        path, params = LAST
        outcomes = Outcomes(base, path)
        json_body = get(base, path, params)[1]
        arrow_body = get(base, path, params, accept="application/vnd.apache.arrow.stream")[1]
        other = get(base, path, {**params, "at": "2026-03-02T18:00:00Z"})[1]
        assert json_body != arrow_body and json_body != other
        assert get(base, path, params)[1] == json_body
        assert outcomes() == {"miss": 3.0, "hit": 1.0}


def test_the_cache_can_be_turned_off(lake: Settings) -> None:
    for base in _serve(lake.model_copy(update={"api_cache_mb": 0})):
        path, params = BARS
        outcomes = Outcomes(base, path)
        assert get(base, path, params)[1] == get(base, path, params)[1]
        assert outcomes() == {"hit": 0.0, "miss": 0.0}


def test_with_redis_what_one_worker_computed_another_reads(lake: Settings, redis_url: str) -> None:  # noqa: F811
    shared = lake.model_copy(update={"redis_url": redis_url, "api_cache_redis": True})
    path, params = BARS
    for first in _serve(shared):
        for second in _serve(shared):
            outcomes = Outcomes(first, path)
            computed = get(first, path, params)[1]
            assert outcomes() == {"hit": 0.0, "miss": 1.0}
            read = get(second, path, params)[1]  # the other worker has never answered it: Redis has
            assert read == computed and outcomes() == {"hit": 0.0, "miss": 1.0, "shared_hit": 1.0}
            _land(lake, Dataset.TRADES, generate_trades(dt.date(2026, 3, 4), ["AAA"], 20, seed=3), commits=1)
            fresh = get(second, path, params)[1]
            assert fresh != computed and outcomes()["miss"] == 2.0  # a new version: computed, not shared


def test_an_unreachable_redis_costs_the_cache_not_the_answer(lake: Settings) -> None:
    from k2.kafka.broker import free_port

    nowhere = lake.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "api_cache_redis": True})
    path, params = BARS
    for base in _serve(nowhere):
        outcomes = Outcomes(base, path)
        assert get(base, path, params)[0] == 200 and get(base, path, params)[0] == 200
        assert outcomes() == {"hit": 1.0, "miss": 1.0}  # the in-process tier still works
