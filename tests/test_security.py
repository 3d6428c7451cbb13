"""The API's security over real HTTP: API keys (hashed at rest, shown once, revocable), OIDC bearer tokens checked
against a JWKS served on loopback (rotation, expiry, audience, `alg=none`), a roles-by-routes matrix of
entitlements with 403s naming what is missing, the audit log, and the refusal to expose K2 unprotected."""

from __future__ import annotations

import base64
import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from k2.api.app import create_app
from k2.api.auth import tokens
from k2.api.auth.keys import KeyStore
from k2.settings import Settings
from tests.test_api import api_server
from tests.test_replay import _build

ISSUER, AUDIENCE = "https://issuer.example", "k2-api"
DAY = {"start": "2026-03-02", "end": "2026-03-03"}
ROLES = """
[roles.reader]
datasets = ["trades", "quotes", "reference", "quality"]
metrics = true

[roles.trades-only]
datasets = ["trades"]

[roles.aaa-desk]
datasets = ["trades", "quotes"]
symbols = ["AA*"]

[roles.scraper]
metrics = true
"""


class Jwks:
    """An issuer's JWKS on loopback; `keys` can be swapped (rotation); `hits` counts fetches."""

    def __init__(self) -> None:
        self.keys: list[RSAKey] = []
        self.hits = 0
        jwks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.hits += 1
                body = json.dumps(KeySet(jwks.keys).as_dict(private=False)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _token(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, "nbf": now - 5, "iat": now,
            "roles": ["reader"], **claims}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings, Jwks, dict[str, str]]]:
    root = tmp_path_factory.mktemp("secured")
    lake, _, _ = _build(root / "home")
    (root / "roles.toml").write_text(ROLES)
    jwks = Jwks()
    jwks.keys = [RSAKey.generate_key(2048, parameters={"kid": "first"})]
    settings = lake.model_copy(update={
        "kafka_bootstrap": "127.0.0.1:1", "api_auth": "on", "api_roles_file": root / "roles.toml",
        "oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": jwks.url,
    })
    store = KeyStore(settings.keys_db)
    keys = {role: store.create(f"owner-{role}", (role,), None)[0]
            for role in ("reader", "trades-only", "aaa-desk", "scraper")}
    with api_server(create_app(settings)) as base:
        yield base, settings, jwks, keys


def _call(base: str, path: str, params: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    import urllib.error
    import urllib.parse
    import urllib.request

    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    request = urllib.request.Request(base + path + query, headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data, status, answer_headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        data, status, answer_headers = error.read(), error.code, dict(error.headers)
    body = json.loads(data) if data[:1] in (b"{", b"[") else {}
    return status, body, answer_headers


def test_no_credentials_or_bad_ones_are_401_with_a_challenge(secured: tuple[str, Settings, Jwks, dict[str, str]]
                                                             ) -> None:
    base, _, _, keys = secured
    status, body, headers = _call(base, "/v1/bars", {"symbols": "AAA"})
    assert status == 401 and body["error"]["code"] == "unauthenticated" and "API key" in body["error"]["message"]
    assert headers["www-authenticate"].startswith("Bearer")
    forged = keys["reader"][:-4] + "AAAA"
    assert _call(base, "/v1/bars", {"symbols": "AAA"}, {"X-API-Key": forged})[0] == 401
    assert _call(base, "/v1/bars", {"symbols": "AAA"}, {"X-API-Key": "k2_nosuchkey_x"})[0] == 401
    assert _call(base, "/health/live")[0] == 200  # liveness stays open (probes carry no credentials)


def test_keys_are_hashed_at_rest_and_a_revoked_key_stops_working(
    secured: tuple[str, Settings, Jwks, dict[str, str]], tmp_path: Path
) -> None:
    base, settings, _, keys = secured
    with sqlite3.connect(settings.keys_db) as connection:
        stored = " ".join(str(v) for row in connection.execute("SELECT * FROM api_keys") for v in row)
    assert all(key.split("_", 2)[2] not in stored for key in keys.values())  # no secret, in any form we sent
    assert "$argon2id$" in stored
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_API_ROLES_FILE": str(settings.api_roles_file)}
    created = subprocess.run([sys.executable, "-m", "k2.cli", "apikey", "create", "--owner", "bob", "--role",
                              "reader", "--expires", "1d"], capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    key_id = key.split("_")[1]
    assert _call(base, "/v1/bars", {"symbols": "AAA"}, {"Authorization": f"Bearer {key}"})[0] == 200
    listed = subprocess.run([sys.executable, "-m", "k2.cli", "apikey", "list", "--format", "csv"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert key_id in listed.stdout and key.split("_", 2)[2] not in listed.stdout + listed.stderr
    revoked = subprocess.run([sys.executable, "-m", "k2.cli", "apikey", "revoke", key_id], capture_output=True,
                             text=True, env=env, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 15  # a verified key is remembered for a few seconds (argon2 costs ~0.1 s)
    while _call(base, "/v1/bars", {"symbols": "AAA"}, {"X-API-Key": key})[0] == 200:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.5)
    assert _call(base, "/v1/bars", {"symbols": "AAA"}, {"X-API-Key": key})[0] == 401
    unknown_role = subprocess.run([sys.executable, "-m", "k2.cli", "apikey", "create", "--owner", "x", "--role",
                                   "root"], capture_output=True, text=True, env=env, timeout=60)
    assert unknown_role.returncode == 1 and "unknown role(s) root" in unknown_role.stderr


MATRIX: list[tuple[str, dict[str, str], dict[str, int]]] = [
    # route, parameters, expected status by role
    ("/v1/bars", {"symbols": "AAA"}, {"reader": 200, "trades-only": 200, "aaa-desk": 200, "scraper": 403}),
    ("/v1/bars", {"symbols": "BBB"}, {"reader": 200, "trades-only": 200, "aaa-desk": 403, "scraper": 403}),
    ("/v1/bars", {}, {"reader": 200, "trades-only": 200, "aaa-desk": 403, "scraper": 403}),
    ("/v1/quotes", {**DAY, "symbols": "AAA"}, {"reader": 200, "trades-only": 403, "aaa-desk": 200, "scraper": 403}),
    ("/v1/asof", {**DAY, "symbols": "AAA"}, {"reader": 200, "trades-only": 403, "aaa-desk": 200, "scraper": 403}),
    ("/v1/trades/last", {"at": "2026-03-03T12:00:00Z", "symbols": "AAA,BBB"},
     {"reader": 200, "trades-only": 200, "aaa-desk": 403, "scraper": 403}),
    ("/v1/reference", {}, {"reader": 200, "trades-only": 403, "aaa-desk": 403, "scraper": 403}),
    ("/v1/quality", {}, {"reader": 200, "trades-only": 403, "aaa-desk": 403, "scraper": 403}),
    ("/v1/snapshots", {"dataset": "quotes"}, {"reader": 200, "trades-only": 403, "aaa-desk": 403, "scraper": 403}),
    ("/metrics", {}, {"reader": 200, "trades-only": 403, "aaa-desk": 403, "scraper": 200}),
]


@pytest.mark.parametrize(("path", "params", "expected"), MATRIX,
                         ids=[f"{p}?{'&'.join(f'{k}={v}' for k, v in q.items())}" for p, q, _ in MATRIX])
def test_roles_by_routes(secured: tuple[str, Settings, Jwks, dict[str, str]], path: str, params: dict[str, str],
                         expected: dict[str, int]) -> None:
    base, settings, _, keys = secured
    for role, want in expected.items():
        status, body, _ = _call(base, path, params, {"X-API-Key": keys[role]})
        assert status == want, (role, body)
        if want == 403:
            assert body["error"]["code"] == "not_entitled" and body["error"]["details"]["missing"], body
    audit = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    mine = [a for a in audit if a["route"] == path]
    assert {a["decision"] for a in mine} >= ({"allow", "deny"} if 403 in expected.values() else {"allow"})
    assert all(a["caller"].startswith(("key:", "token:")) for a in audit)
    text = settings.audit_log.read_text()
    assert not any(key.split("_", 2)[2] in text for key in keys.values())  # ids only, never a secret


def test_a_denial_names_the_missing_entitlement(secured: tuple[str, Settings, Jwks, dict[str, str]]) -> None:
    base, _, _, keys = secured
    _, body, _ = _call(base, "/v1/trades/last", {"at": "2026-03-03T12:00:00Z", "symbols": "AAA,BBB"},
                       {"X-API-Key": keys["aaa-desk"]})
    assert "BBB" in body["error"]["message"] and "AA*" in body["error"]["message"]
    _, body, _ = _call(base, "/v1/bars", {}, {"X-API-Key": keys["aaa-desk"]})
    assert "name the symbols" in body["error"]["message"]
    _, body, _ = _call(base, "/v1/quotes", {**DAY, "symbols": "AAA"}, {"X-API-Key": keys["trades-only"]})
    assert body["error"]["details"]["missing"] == "dataset:quotes"


def test_oidc_tokens_are_checked_against_the_issuer_s_keys(
    secured: tuple[str, Settings, Jwks, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, jwks, _ = secured
    first = jwks.keys[0]

    def bearer(token: str) -> tuple[int, dict[str, Any]]:
        status, body, _ = _call(base, "/v1/bars", {"symbols": "AAA"}, {"Authorization": f"Bearer {token}"})
        return status, body

    assert bearer(_token(first))[0] == 200
    assert bearer(_token(first, roles=["trades-only"]))[0] == 200
    assert bearer(_token(first, roles=["scraper"]))[0] == 403  # roles come from the token's claim
    expired = bearer(_token(first, exp=int(time.time()) - 3600))
    assert expired[0] == 401 and "exp" in expired[1]["error"]["message"]
    assert bearer(_token(first, aud="another-service"))[0] == 401
    assert bearer(_token(first, iss="https://evil.example"))[0] == 401
    assert bearer(_token(first, nbf=int(time.time()) + 3600))[0] == 401
    unsigned = (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode() + "." +
                _token(first).split(".")[1] + ".")
    none = bearer(unsigned)
    assert none[0] == 401 and "none" in none[1]["error"]["message"]
    stranger = RSAKey.generate_key(2048, parameters={"kid": "first"})  # same kid, not the issuer's key
    assert bearer(_token(stranger))[0] == 401

    # rotation: the issuer publishes a new key; a token signed with it is accepted after one refetch
    monkeypatch.setattr(tokens, "REFETCH_SECONDS", 0.5)
    rotated = RSAKey.generate_key(2048, parameters={"kid": "second"})
    jwks.keys = [first, rotated]
    time.sleep(0.6)
    hits = jwks.hits
    assert bearer(_token(rotated))[0] == 200
    assert jwks.hits == hits + 1
    for _ in range(5):  # unknown key ids in a burst: at most one refetch per interval
        assert bearer(_token(RSAKey.generate_key(2048, parameters={"kid": "forged"})))[0] == 401
    assert jwks.hits <= hits + 2


def test_k2_serve_refuses_to_expose_k2_unprotected(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _build(home)
    env = {**os.environ, "K2_HOME": str(home)}

    def serve(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "k2.cli", "serve", *args], capture_output=True, text=True,
                              env={**env, **extra}, timeout=60)

    nothing = serve("--host", "0.0.0.0", "--port", "1")
    assert nothing.returncode == 1 and "nothing can authenticate" in nothing.stderr, nothing.stderr
    off = serve("--host", "0.0.0.0", "--port", "1", K2_API_AUTH="off")
    assert off.returncode == 1 and "cannot be off" in off.stderr, off.stderr
    no_audience = serve("--port", "1", K2_API_AUTH="on", K2_OIDC_ISSUER=ISSUER)
    assert no_audience.returncode == 1 and "K2_OIDC_AUDIENCE" in no_audience.stderr, no_audience.stderr
