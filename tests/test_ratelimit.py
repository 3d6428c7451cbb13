"""Rate limits over real HTTP: a token bucket per caller (API key, token subject, or address when anonymous) and
route class; 429 with Retry-After and RateLimit-* and K2's error body over the limit; served again after
Retry-After; counters shared by two app instances through a real `redis-server`, and not shared without one.

Deterministic: the buckets are tiny and refill slowly (one token in 2 s to 1 min), so a burst is refused by count,
whatever the machine's speed; the one wait (Retry-After) only ever errs towards more tokens."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from k2.api import ratelimit
from k2.api.app import create_app
from k2.api.auth.keys import KeyStore
from k2.settings import Settings, parse_rate
from tests.test_api import api_server
from tests.test_replay import _build

DAY = {"start": "2026-03-02", "end": "2026-03-03"}
POINT = ("/v1/symbols", {})
ANALYTICS = ("/v1/bars", {"symbols": "AAA"})
TICKS = ("/v1/trades", {**DAY, "symbols": "AAA", "limit": 10})
TINY = {"api_rate_point": "1/min burst 3", "api_rate_analytics": "1/2s burst 2", "api_rate_ticks": "1/min burst 2",
        "api_rate_stream": "1/min burst 1"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, str]]:
    """A small lake with two API keys (reader role); rate limits tiny."""
    settings, _, _ = _build(tmp_path_factory.mktemp("ratelimit") / "home")
    settings = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", **TINY})
    store = KeyStore(settings.keys_db)
    keys = {owner: store.create(owner, ("reader",), None)[0] for owner in ("alice", "bob")}
    return settings, keys


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """An app of its own (its own buckets) on a loopback port, in a thread."""
    with api_server(create_app(settings)) as base:
        yield base.removeprefix("http://")


def call(address: str, route: tuple[str, dict[str, Any]], key: str | None = None,
         source: str = "127.0.0.1") -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET over a fresh connection from `source` (any 127.x address): status, JSON body, lower-cased headers."""
    import urllib.parse

    path, params = route
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        connection.request("GET", f"{path}?{urllib.parse.urlencode(params)}",
                           headers={"Accept": "application/json", **({"X-API-Key": key} if key else {})})
        response = connection.getresponse()
        data = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, json.loads(data) if data[:1] == b"{" else {}, headers
    finally:
        connection.close()


def statuses(address: str, route: tuple[str, dict[str, Any]], count: int, key: str | None = None,
             source: str = "127.0.0.1") -> list[int]:
    return [call(address, route, key, source)[0] for _ in range(count)]


def test_over_the_limit_is_429_with_retry_after_then_served_again(lake: tuple[Settings, dict[str, str]]) -> None:
    settings, keys = lake
    with serving(settings.model_copy(update={"api_auth": "on"})) as api:
        first = call(api, ANALYTICS, keys["alice"])
        assert first[0] == 200, first[1]
        # a full bucket of 2: one spent, one left, full again in about one refill (2 s)
        assert (first[2]["ratelimit-limit"], first[2]["ratelimit-remaining"]) == ("2", "1")
        assert 1 <= int(first[2]["ratelimit-reset"]) <= 2
        assert call(api, ANALYTICS, keys["alice"])[0] == 200
        status, body, headers = call(api, ANALYTICS, keys["alice"])
        assert status == 429, body
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "rate_limited"
        assert "K2_API_RATE_ANALYTICS" in body["error"]["message"] and "1/2s burst 2" in body["error"]["message"]
        retry_after = int(headers["retry-after"])
        assert 1 <= retry_after <= 2 and body["error"]["details"]["retry_after"] == retry_after
        assert body["error"]["details"]["route_class"] == "analytics"
        assert headers["ratelimit-limit"] == "2" and headers["ratelimit-remaining"] == "0"
        assert retry_after <= int(headers["ratelimit-reset"]) <= 4
        time.sleep(retry_after)
        status, body, headers = call(api, ANALYTICS, keys["alice"])
        assert status == 200, body
        assert headers["ratelimit-remaining"] == "0"  # the one token that came back


def test_each_key_has_its_own_bucket(lake: tuple[Settings, dict[str, str]]) -> None:
    settings, keys = lake
    with serving(settings.model_copy(update={"api_auth": "on"})) as api:
        assert statuses(api, POINT, 4, keys["alice"]) == [200, 200, 200, 429]
        assert statuses(api, POINT, 4, keys["bob"]) == [200, 200, 200, 429]  # untouched by alice's burst
        assert call(api, POINT, keys["alice"])[0] == 429  # one token a minute: still out


def test_route_classes_have_their_own_buckets(lake: tuple[Settings, dict[str, str]]) -> None:
    settings, keys = lake
    with serving(settings.model_copy(update={"api_auth": "on"})) as api:
        assert statuses(api, POINT, 4, keys["alice"]) == [200, 200, 200, 429]
        assert statuses(api, TICKS, 3, keys["alice"]) == [200, 200, 429]
        assert call(api, ANALYTICS, keys["alice"])[0] == 200
        assert call(api, ("/v1/trades/last", {"at": "2026-03-03T12:00:00Z"}), keys["alice"])[0] == 429  # point too
        status, body, _ = call(api, ("/v1/replay", {**DAY, "symbols": "AAA", "limit": 10}), keys["alice"])
        assert status == 200, body
        status, body, _ = call(api, ("/v1/replay", {**DAY, "symbols": "AAA", "limit": 10}), keys["alice"])
        assert status == 429 and body["error"]["details"]["route_class"] == "stream"


def test_anonymous_callers_are_limited_by_address_and_health_is_not_limited(
    lake: tuple[Settings, dict[str, str]]
) -> None:
    settings, _ = lake
    with serving(settings.model_copy(update={"api_auth": "off"})) as api:
        assert statuses(api, POINT, 4) == [200, 200, 200, 429]
        assert statuses(api, POINT, 4, source="127.0.0.2") == [200, 200, 200, 429]  # another address
        for path in ("/health/live", "/metrics"):
            for _ in range(5):
                status, _, headers = call(api, (path, {}))
                assert status == 200 and "ratelimit-limit" not in headers, path


def test_off_turns_the_limits_off(lake: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = lake
    with serving(settings.model_copy(update={"api_auth": "off", "api_rate_limit": "off"})) as api:
        for _ in range(6):
            status, _, headers = call(api, POINT)
            assert status == 200 and "ratelimit-limit" not in headers


def test_without_redis_two_app_instances_count_apart(lake: tuple[Settings, dict[str, str]]) -> None:
    settings, keys = lake
    on = settings.model_copy(update={"api_auth": "on"})
    with serving(on) as first, serving(on) as second:
        assert statuses(first, POINT, 4, keys["alice"]) == [200, 200, 200, 429]
        assert statuses(second, POINT, 4, keys["alice"]) == [200, 200, 200, 429]  # its own bucket


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server (Debian's; scripts/test installs it) on a free loopback port, without persistence."""
    import redis

    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: scripts/test installs Debian's redis-server"
    port = _free_port()
    log = (tmp_path / "redis.log").open("w")
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None, (tmp_path / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(10)
        log.close()


def test_with_redis_two_app_instances_share_one_bucket(lake: tuple[Settings, dict[str, str]], redis_url: str) -> None:
    import redis

    settings, keys = lake
    shared = settings.model_copy(update={"api_auth": "on", "redis_url": redis_url})
    with serving(shared) as first, serving(shared) as second:
        # alice's 3 tokens spent across both instances (as across `k2 serve` workers): the 4th is refused by either
        assert [call(first, POINT, keys["alice"])[0], call(second, POINT, keys["alice"])[0],
                call(first, POINT, keys["alice"])[0]] == [200, 200, 200]
        status, body, headers = call(second, POINT, keys["alice"])
        assert status == 429 and body["error"]["code"] == "rate_limited", body
        assert int(headers["retry-after"]) >= 1 and headers["ratelimit-remaining"] == "0"
        assert call(first, POINT, keys["alice"])[0] == 429
        assert statuses(second, POINT, 4, keys["bob"]) == [200, 200, 200, 429]  # bob: a bucket of his own
    stored = redis.Redis.from_url(redis_url).keys("k2:ratelimit:*")
    assert sorted(k.decode().rsplit(":", 1)[0] for k in stored) == ["k2:ratelimit:point:key"] * 2


def test_unreachable_redis_serves_and_warns(lake: tuple[Settings, dict[str, str]],
                                            caplog: pytest.LogCaptureFixture) -> None:
    settings, _ = lake
    nowhere = settings.model_copy(update={"api_auth": "off", "redis_url": f"redis://127.0.0.1:{_free_port()}/0"})
    with caplog.at_level(logging.WARNING, logger="k2.api.ratelimit"), serving(nowhere) as api:
        assert statuses(api, POINT, 5) == [200] * 5  # over the limit of 3, but nothing can count: served
    assert any("Redis (K2_REDIS_URL) cannot be reached" in r.getMessage() for r in caplog.records)


def test_every_v1_route_has_a_route_class(lake: tuple[Settings, dict[str, str]]) -> None:
    app = create_app(lake[0])
    paths = app.openapi()["paths"]
    assert {path for path in paths if path.startswith("/v1/")} == set(ratelimit.ROUTE_CLASSES)
    assert set(ratelimit.ROUTE_CLASSES.values()) == set(ratelimit.CLASSES)
    for path in ratelimit.ROUTE_CLASSES:  # the 429 is documented, with its fields
        for operation in paths[path].values():
            refused = operation["responses"]["429"]
            assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
                refused["headers"])


def test_rate_settings_are_checked() -> None:
    assert parse_rate("1000/s") == (1000, 1000, 1000)
    assert parse_rate("20/s burst 100") == (20, 1000, 100)
    assert parse_rate("600/min") == (600, 60_000, 600)
    assert parse_rate("1/3s burst 3") == (1, 3000, 3)
    for bad in ("fast", "10/fortnight", "0/s", "10/s burst 0", "10/0s", "10/s burst"):
        with pytest.raises(ValueError, match=r"rate limit|at least 1"):
            parse_rate(bad)
    with pytest.raises(ValueError, match="api_rate_ticks"):
        Settings(api_rate_ticks="lots")
