"""OAuth2/OIDC bearer tokens: signature against the issuer's JWKS, then issuer, audience, expiry and not-before.

The JWKS is fetched once and kept; a token signed with a key id the set does not hold makes one refetch (the issuer
rotated its keys), at most every `REFETCH_SECONDS`, so a flood of forged key ids cannot hammer the issuer.
Algorithms are an allow-list (`K2_OIDC_ALGORITHMS`); `none` and symmetric ones are never accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = 30
_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class TokenError(Exception):
    """The token is not acceptable; the message says why (sent to the caller: no secrets in it)."""


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    roles: tuple[str, ...]
    claims: Mapping[str, Any]


class TokenValidator:
    def __init__(self, issuer: str, audience: str, jwks_url: str, roles_claim: str, algorithms: str) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._roles_claim = roles_claim
        self._algorithms = [a.strip() for a in algorithms.split(",") if a.strip() in _ASYMMETRIC]
        if not self._algorithms:
            raise ValueError(f"no acceptable signature algorithm in {algorithms!r}: use RS256, ES256 …")
        self._keys: KeySet | None = None
        self._fetched_at = -REFETCH_SECONDS
        self._lock = threading.Lock()

    def validate(self, token: str) -> TokenClaims:
        header = _header(token)
        if header.get("alg") not in self._algorithms:
            raise TokenError(f"token algorithm {header.get('alg')!r} is not accepted ({', '.join(self._algorithms)})")
        keys = self._key_set(str(header.get("kid", "")))
        try:
            decoded = jwt.decode(token, keys, algorithms=self._algorithms)
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY_SECONDS, iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": self._audience}, exp={"essential": True},
            ).validate(decoded.claims)
        except JoseError as exc:
            raise TokenError(f"token rejected: {exc.description or exc.error}") from None
        claims = decoded.claims
        return TokenClaims(str(claims.get("sub", "")), _roles(claims, self._roles_claim), claims)

    def _key_set(self, kid: str) -> KeySet:
        with self._lock:
            known = self._keys is not None and (not kid or any(k.kid == kid for k in self._keys.keys))
            stale = time.monotonic() - self._fetched_at >= REFETCH_SECONDS
            if self._keys is None or (not known and stale):
                self._keys = self._fetch()
                self._fetched_at = time.monotonic()
            return self._keys

    def _fetch(self) -> KeySet:
        url = self._jwks_url or _discover(self._issuer)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return KeySet.import_key_set(json.loads(response.read()))
        except (OSError, ValueError, JoseError) as exc:
            if self._keys is not None:
                return self._keys  # keep verifying with the keys we have while the issuer is unreachable
            raise TokenError(f"the issuer's keys could not be fetched from {url}: {exc}") from None


def _discover(issuer: str) -> str:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(json.loads(response.read())["jwks_uri"])
    except (OSError, ValueError, KeyError) as exc:
        raise TokenError(f"the issuer's discovery document {url} gave no jwks_uri: {exc}") from None


def _header(token: str) -> dict[str, Any]:
    try:
        encoded = token.split(".")[0].encode()
        header = json.loads(base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4)))
    except (ValueError, IndexError, binascii.Error) as exc:
        raise TokenError(f"not a JWT: {exc}") from None
    if not isinstance(header, dict):
        raise TokenError("not a JWT: its header is not an object")
    return header


def _roles(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """Role names at a dotted claim path (`roles`, `realm_access.roles` …): a list of strings, or one string."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return tuple(value.replace(",", " ").split())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()
