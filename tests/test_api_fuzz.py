"""Bad input against the REST API over real HTTP: Schemathesis generates requests from K2's own OpenAPI document (as
the running server serves it) and checks that none gets a 5xx and every answer keeps the document's promises; then
one focused test per bug that fuzzing found, and the bad input the issue names: oversized ranges, bad symbols, bad
timestamps, and page tokens or replay cursors from elsewhere, each refused with a 4xx that says how to fix it.

The fuzz test is deterministic (derandomized: the same requests every run). For a deeper look locally:
`K2_FUZZ_EXAMPLES=500 K2_FUZZ_RANDOM=1 pytest tests/test_api_fuzz.py -k fuzz` (new requests on every run).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
import urllib.parse
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from k2.api.formats import ARROW, PARQUET
from k2.replay.engine import Replay
from k2.settings import Settings
from tests.test_api import DAYS, get, get_json, served  # noqa: F401  (`served`: this module's own server and lake)

# K2 meets every one of these: no 5xx; only documented statuses and content types; every JSON body (pages and the
# one error body alike) valid against its schema; and requests that break the schema (a limit of 0, a time that is
# not one, a dataset that does not exist …) refused with a 4xx. Not checked: `positive_data_acceptance` (a request
# can fit the schema and still name an unknown symbol, or a range too long: K2 rightly refuses those).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, Settings]) -> Any:  # noqa: F811
    base, _ = served
    config = schemathesis.Config.from_dict({
        "seed": 16,
        "generation": {"max-examples": int(os.environ.get("K2_FUZZ_EXAMPLES", "30")),
                       "deterministic": not os.environ.get("K2_FUZZ_RANDOM"), "database": "none"},
        # the replay stream is read for 50 events at most, then the client hangs up (the server stops it)
        "max-stream-events": 50,
        "request-timeout": 30,
    })
    return schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 reads `node._nodeid`, which pytest 9.2 no longer has (it is `nodeid`, read-only)
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=list(HealthCheck))
@schema.parametrize()
def test_fuzz_no_generated_request_breaks_the_api(case: Any) -> None:
    checks = CHECKS
    if case.operation.path in ("/health/ready", "/v1/pipeline/dead-letters"):
        # their documented 503 is the point here: the test serves without a broker, and they say so
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.call_and_validate(checks=checks)


def refused(base: str, path: str, params: dict[str, Any], status: int, code: str, hint: str) -> str:
    """The request gets `status` with K2's one error body, of `code`, with `hint` in its message."""
    got, body = get_json(base, path, params)
    assert got == status, (path, params, body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and hint in body["error"]["message"], (path, params, body)
    message: str = body["error"]["message"]
    return message


# routes that answer one JSON document rather than a table (no Arrow or Parquet), or a stream
NOT_TABLES = {"/v1/replay", "/v1/me", "/v1/pipeline/lag", "/v1/pipeline/dead-letters", "/v1/snapshots/tags"}


def test_the_openapi_document_promises_the_one_error_body(served: tuple[str, Settings]) -> None:  # noqa: F811
    """Found by fuzzing: every 400, 404 and 503 was undocumented, and the 422 was documented as FastAPI's own
    {"detail": [...]}, a body K2 never sends."""
    base, _ = served
    _, spec = get_json(base, "/openapi.json")
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    tables = [path for path in spec["paths"] if path.startswith("/v1/") and path not in NOT_TABLES]
    assert len(tables) == 13
    for path, methods in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in methods.items():
            responses = operation["responses"]
            for status in ("400", "404", "422", "500", "503"):
                assert responses[status]["content"]["application/json"]["schema"] == \
                    {"$ref": "#/components/schemas/ErrorBody"}, (path, method, status)
        if path in tables:
            assert {"application/json", ARROW, PARQUET} <= set(methods["get"]["responses"]["200"]["content"]), path
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_bad_timestamps_get_a_422_that_says_how_to_write_one(served: tuple[str, Settings]) -> None:  # noqa: F811
    base, _ = served
    # found by fuzzing: numbers passed as times, read as seconds since 1970 (an answer for a moment never meant)
    refused(base, "/v1/bars", {"symbols": "AAA", "start": "0.5"}, 422, "invalid_request", "2026-03-02T14:30:00Z")
    refused(base, "/v1/trades", {"start": "20260301", "end": "2026-03-05"}, 422, "invalid_request", "ISO-8601")
    refused(base, "/v1/summary", {"to": "0"}, 422, "invalid_request", "ISO-8601")
    # found by fuzzing: a 500 (the engine's padding overflowed); now far-off years are refused up front
    refused(base, "/v1/summary", {"from": "0001-01-01", "to": "0001-01-01"}, 422, "invalid_request", "1900 to 2199")
    refused(base, "/v1/trades/last", {"at": "9999-12-31T23:59:59Z"}, 422, "invalid_request", "1900 to 2199")
    # a '+' sent unencoded arrives as a space
    refused(base, "/v1/trades/last", {"at": "2026-03-03T15:00:00 10:00"}, 422, "invalid_request", "%2B")
    refused(base, "/v1/trades/last", {"at": "2026-13-03"}, 422, "invalid_request", "e.g. 2026-03-02T14:30:00Z")
    refused(base, "/v1/summary", {"from": "March 3"}, 422, "invalid_request", "e.g. 2026-03-02")
    for at in ("2026-03-03T15:00:00+00:00", "2026-03-03 15:00:00", "2026-03-04", "2026-03-03T15:00:00.5Z"):
        status, body = get_json(base, "/v1/trades/last", {"at": at, "symbols": "AAA"})
        assert status == 200 and len(body["data"]) == 1, (at, body)


def test_oversized_requests_get_a_400_that_says_how_to_narrow_them(served: tuple[str, Settings]) -> None:  # noqa: F811
    base, _ = served
    refused(base, "/v1/asof", {"start": "2026-01-01", "end": "2026-03-05"}, 400, "range_too_large", "narrow")
    refused(base, "/v1/quotes", {"start": "2025-03-01", "end": "2026-03-05", "symbols": "AAA"}, 400,
            "range_too_large", "at most 31")
    refused(base, "/v1/trades", {**DAYS, "symbols": ",".join(f"S{i}" for i in range(501))}, 400,
            "too_many_symbols", "at most 500")
    refused(base, "/v1/trades", {**DAYS, "limit": 10_001}, 422, "invalid_request", "10000")
    refused(base, "/v1/replay", {"limit": 10_000_001}, 422, "invalid_request", "limit")


def test_bad_symbols_get_a_404_that_names_the_close_ones(served: tuple[str, Settings]) -> None:  # noqa: F811
    base, _ = served
    for path, params in [("/v1/trades", DAYS), ("/v1/quotes", DAYS), ("/v1/bars", {}), ("/v1/vwap", {}),
                         ("/v1/trades/last", {"at": "2026-03-04"}), ("/v1/asof", DAYS), ("/v1/summary", {}),
                         # the replay stream was just empty for a symbol the lake never held
                         ("/v1/replay", {"limit": 5})]:
        refused(base, path, {**params, "symbols": "BBX"}, 404, "unknown_symbol", "did you mean BBB?")
    # a replay checks each symbol up front (the tables answer with what they hold of the others)
    refused(base, "/v1/replay", {"symbols": "AAA,BBX"}, 404, "unknown_symbol", "'BBX' (did you mean BBB?)")


def _token_of(payload: object, prefix: str = "k2p1.") -> str:
    return prefix + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _sse_cursor(base: str, params: dict[str, Any]) -> str:
    status, data, _ = get(base, "/v1/replay", params, accept="text/event-stream")
    assert status == 200
    blocks = [b for b in data.decode().split("\n\n") if b.startswith("event: cursor")]
    cursor: str = json.loads(blocks[-1].split("data: ", 1)[1])
    return cursor


def test_page_tokens_from_elsewhere_get_a_400(served: tuple[str, Settings]) -> None:  # noqa: F811
    base, _ = served
    query = {**DAYS, "symbols": "AAA", "limit": 10}
    _, first = get_json(base, "/v1/trades", query)
    token = first["next_cursor"]
    # another route's, another range's: the token names its query
    refused(base, "/v1/quotes", {**query, "page_token": token}, 400, "page_token_mismatch", "same symbols")
    refused(base, "/v1/trades", {**query, "end": "2026-03-04", "page_token": token}, 400, "page_token_mismatch",
            "start again without a token")
    # a replay cursor is no page token, and a page token no replay cursor
    cursor = _sse_cursor(base, {"symbols": "AAA", "limit": 3})
    refused(base, "/v1/trades", {**query, "page_token": cursor}, 400, "bad_page_token", "next_cursor")
    refused(base, "/v1/replay", {"cursor": token}, 400, "bad_replay", "not a replay cursor")
    # damaged or forged: a JSON object instead of the list was a 500 (KeyError); wrong types, absurd times
    for payload in [{"0": 1}, ["q", None, "ts", "AAA", 1], ["q", None, 10**30, "AAA", 1], ["q", None, 1, "AAA"],
                    ["q", "snap", 1, "AAA", 1], ["q", None, True, "AAA", 1], "text", None]:
        refused(base, "/v1/trades", {**query, "page_token": _token_of(payload)}, 400, "bad_page_token",
                "next_cursor of the previous page")


def test_damaged_replay_cursors_get_a_400(served: tuple[str, Settings]) -> None:  # noqa: F811
    base, _ = served
    cursor = _sse_cursor(base, {"symbols": "AAA", "limit": 3})
    payload = cursor.removeprefix("k2r1.")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    # each was a 500 (or a 200 whose stream then broke): snapshots as a list, an unknown adjustment, numbers as
    # symbols, a short position
    for damage in [{"p": []}, {"j": "sideways"}, {"s": [5]}, {"k": [1]}, {"a": 5}]:
        refused(base, "/v1/replay", {"cursor": _token_of({**fields, **damage}, "k2r1.")}, 400, "bad_replay",
                "copy it whole")
    # `cursor=` (empty) was "give a request or a cursor, not both": it is no cursor
    status, data, _ = get(base, "/v1/replay", {"symbols": "AAA", "limit": 3, "cursor": ""})
    assert status == 200 and data.decode().count("\ndata: {") == 3 + 1  # three events and the end


def test_replay_refuses_speeds_it_cannot_keep(served: tuple[str, Settings]) -> None:  # noqa: F811
    base, _ = served
    # nan crashed the pacer mid-stream; 1e-300 held a worker thread for ever, waiting for the second event
    for speed, hint in [("nan", "positive number"), ("inf", "positive number"), ("-3", "positive"),
                        ("1e-300", "at least 0.01"), ("fast", "max or a positive multiple")]:
        refused(base, "/v1/replay", {"speed": speed}, 400, "bad_speed", hint)


def test_a_paced_replay_stops_when_its_client_hangs_up(served: tuple[str, Settings],  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A paced replay used to go on for nobody after its client left, holding a worker thread until its next event
    was due (a night's gap at real time: hours); now it stops at once."""
    base, _ = served
    stopped = threading.Event()
    stop = Replay.stop

    def recorded(self: Replay) -> None:
        if self.request.symbols == ("CCC",):  # this test's replay, not one another test left to wind down
            stopped.set()
        stop(self)

    monkeypatch.setattr(Replay, "stop", recorded)
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", "/v1/replay?symbols=CCC&speed=0.01", headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    assert response.status == 200 and response.read1(65536).startswith(b"event: cursor")
    assert not stopped.is_set()
    connection.close()  # hang up while the replay waits for its next event
    started = time.monotonic()
    assert stopped.wait(10), "the replay went on after its client left"
    assert time.monotonic() - started < 5
