"""Who is calling, and may they: the dependency every `/v1` route (and /metrics) runs before its work.

Auth is on when `K2_API_AUTH=on`, or `auto` (the default) and `k2 serve` binds a non-loopback address; it can
never be off on such an address, and K2 refuses to start there without a usable API key or an OIDC issuer. A
caller sends an API key (`X-API-Key: k2_…` or `Authorization: Bearer k2_…`) or an OIDC bearer token. Each decision,
allow or deny, goes to the audit log with the caller's key id or token subject.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPBearer

from k2.api.auth import audit
from k2.api.auth.keys import PREFIX, KeyStore
from k2.api.auth.roles import Denial, Entitlements, entitlements, load_roles
from k2.api.auth.tokens import TokenError, TokenValidator
from k2.api.deps import symbol_list
from k2.api.errors import ApiError
from k2.errors import InputError
from k2.settings import Settings

_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (`k2 apikey create`).")
_BEARER = HTTPBearer(auto_error=False, description="An API key, or an access token of the configured OIDC issuer.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="k2"'}

# the datasets each route reads (routes that take `dataset`/`datasets` name theirs in the request)
_ROUTE_DATASETS: dict[str, tuple[str, ...]] = {
    "/v1/trades": ("trades",), "/v1/quotes": ("quotes",), "/v1/bars": ("trades",), "/v1/vwap": ("trades",),
    "/v1/summary": ("trades",), "/v1/trades/last": ("trades",), "/v1/quotes/last": ("quotes",),
    "/v1/asof": ("trades", "quotes"), "/v1/symbols": ("trades",), "/v1/reference": ("reference",),
    "/v1/corporate-actions": ("reference",), "/v1/quality": ("quality",), "/v1/me": (),
    "/v1/pipeline/lag": (), "/v1/pipeline/dead-letters": (), "/v1/snapshots/tags": (),
}
# routes that need more than datasets: the pipeline view (operational data) and changes to the lake
_ROUTE_NEEDS: dict[str, str] = {
    "/v1/pipeline/lag": "metrics", "/v1/pipeline/dead-letters": "metrics", "/v1/snapshots/tags": "admin",
}


@dataclass(frozen=True)
class Caller:
    name: str  # "key:<id>", "token:<sub>" or "anonymous": what the audit log says
    kind: str
    entitlements: Entitlements


ANONYMOUS = Caller("anonymous", "none", Entitlements(unrestricted=True))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_enabled(settings: Settings) -> bool:
    """Whether requests must authenticate; an InputError for a configuration that would expose K2 unprotected."""
    exposed = not is_loopback(settings.api_host)
    if settings.api_auth == "off" and exposed:
        raise InputError(f"K2_API_AUTH=off on {settings.api_host}: authentication cannot be off on an address "
                         "reachable from other machines; bind to 127.0.0.1 or turn it on")
    return settings.api_auth == "on" or (settings.api_auth == "auto" and exposed)


class Guard:
    """Authentication and authorization of one `k2 serve` worker."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = auth_enabled(settings)
        self._roles = load_roles(settings.api_roles_file)
        self._keys = KeyStore(settings.keys_db)
        self._tokens = (TokenValidator(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                                       settings.oidc_roles_claim, settings.oidc_algorithms)
                        if settings.oidc_issuer else None)
        if settings.oidc_issuer and not settings.oidc_audience:
            raise InputError("K2_OIDC_ISSUER is set without K2_OIDC_AUDIENCE: tokens minted for other services "
                             "would be accepted; set the audience K2's tokens carry")
        self._audit: logging.Logger | None = audit_logger_for(settings) if self.enabled else None
        if self.enabled and self._tokens is None and not self._keys.any_usable():
            raise InputError(f"authentication is on ({_why(settings)}) but nothing can authenticate: create an API "
                             "key with `k2 apikey create --owner NAME --role reader`, or set K2_OIDC_ISSUER and "
                             "K2_OIDC_AUDIENCE")

    def authenticate(self, api_key: str | None, bearer: str | None) -> Caller:
        presented = api_key or bearer
        if not self.enabled:
            return ANONYMOUS
        if not presented:
            raise ApiError(401, "unauthenticated", "authentication required: send an API key (X-API-Key: k2_… or "
                           "Authorization: Bearer k2_…) or an access token of the configured issuer",
                           headers=_CHALLENGE)
        if presented.startswith(PREFIX):
            key = self._keys.verify(presented)
            if key is None:
                raise ApiError(401, "unauthenticated", "the API key is unknown, expired or revoked",
                               headers=_CHALLENGE)
            return Caller(f"key:{key.key_id}", "key", entitlements(self._roles, key.roles))
        if self._tokens is None:
            raise ApiError(401, "unauthenticated", "bearer tokens are not accepted here (no OIDC issuer is "
                           "configured): send an API key", headers=_CHALLENGE)
        try:
            claims = self._tokens.validate(presented)
        except TokenError as exc:
            raise ApiError(401, "unauthenticated", str(exc), headers=_CHALLENGE) from None
        return Caller(f"token:{claims.subject}", "token", entitlements(self._roles, claims.roles))

    def decide(self, caller: Caller, route: str, denial: Denial | None) -> None:
        """Audit the decision; raise 403 naming the missing entitlement when refused."""
        if self._audit is not None:
            audit.record(self._audit, caller=caller.name, kind=caller.kind, route=route, allowed=denial is None,
                         status=200 if denial is None else 403, missing=denial.missing if denial else "",
                         reason=denial.message if denial else "")
        if denial is not None:
            raise ApiError(403, "not_entitled", denial.message, details={"missing": denial.missing})


def audit_logger_for(settings: Settings) -> logging.Logger:
    return audit.audit_logger(settings.audit_log)


def _why(settings: Settings) -> str:
    return "K2_API_AUTH=on" if settings.api_auth == "on" else f"k2 serve binds {settings.api_host}"


def guard(request: Request) -> Guard:
    found: Guard = request.app.state.guard
    return found


def documented_schemes(enabled: bool) -> list[Any]:
    """The security schemes of the OpenAPI document: only when auth is on (then every `/v1` route lists them);
    with auth off the API takes no credentials, and its document says so."""
    return [Depends(_API_KEY), Depends(_BEARER)] if enabled else []


def _credentials(request: Request) -> tuple[str | None, str | None]:
    """(X-API-Key, the Bearer credentials of Authorization)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return request.headers.get("x-api-key") or None, bearer


async def authorize(request: Request) -> Caller:
    """The dependency of every `/v1` route: authenticate, then check the datasets and symbols it asks for. With
    auth off it returns at once on the event loop; on, the work (argon2, a JWKS fetch) runs in the thread pool."""
    if not guard(request).enabled:
        return ANONYMOUS
    return await run_in_threadpool(_authorized, request, *_credentials(request))


def _authorized(request: Request, api_key: str | None, bearer: str | None) -> Caller:
    checker = guard(request)
    caller = checker.authenticate(api_key, bearer)
    route = request.url.path
    needs = _ROUTE_NEEDS.get(route)
    if needs is not None:
        allowed = caller.entitlements
        checker.decide(caller, route, allowed.may_administer() if needs == "admin" else allowed.may_scrape_metrics())
        return caller
    datasets = _ROUTE_DATASETS[route] if route in _ROUTE_DATASETS else _named_datasets(request)
    symbols = symbol_list(request.query_params.get("symbols"))
    checker.decide(caller, route, caller.entitlements.check(datasets, symbols))
    return caller


def authorize_metrics(request: Request) -> Caller:
    checker = guard(request)
    caller = checker.authenticate(*_credentials(request))
    if checker.enabled:
        checker.decide(caller, request.url.path, caller.entitlements.may_scrape_metrics())
    return caller


def _named_datasets(request: Request) -> tuple[str, ...]:
    """`/v1/replay?datasets=…` and `/v1/snapshots?dataset=…`: what the request itself names (validated later by
    the route; a name that is no dataset grants nothing here, and the route answers 4xx)."""
    named = request.query_params.get("datasets") or request.query_params.get("dataset")
    if named is None:
        named = "trades,quotes" if request.url.path == "/v1/replay" else "trades"
    return tuple(d.strip().replace("corporate_actions", "reference") for d in named.split(",") if d.strip())
