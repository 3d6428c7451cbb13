"""Who the caller is and what it may do: the console asks once after sign-in, to say up front what is not granted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from k2.api import models
from k2.api.auth.guard import Caller, authorize, guard
from k2.api.auth.roles import DATASETS

router = APIRouter(tags=["account"], responses=models.ERROR_RESPONSES)


class Me(BaseModel):
    caller: str  # "anonymous" when auth is off, "key:<id>" or "token:<subject>"
    auth_enabled: bool
    roles: list[str]
    datasets: list[str]  # readable (for some symbols at least, when `symbols` is set)
    symbols: list[str]  # symbol patterns the datasets are limited to; empty: every symbol
    metrics: bool  # /metrics and the pipeline view
    admin: bool  # admin actions (tagging snapshots)


@router.get("/me", response_model=Me)
def me(request: Request, caller: Annotated[Caller, Depends(authorize)]) -> Me:
    """The caller and its entitlements."""
    granted = caller.entitlements
    if granted.unrestricted:
        return Me(caller=caller.name, auth_enabled=guard(request).enabled, roles=[], datasets=list(DATASETS),
                  symbols=[], metrics=True, admin=True)
    roles = granted.roles
    limited = all(r.symbols for r in roles) and bool(roles)
    return Me(caller=caller.name, auth_enabled=True, roles=[r.name for r in roles],
              datasets=sorted({d for r in roles for d in r.datasets}),
              symbols=sorted({p for r in roles for p in r.symbols}) if limited else [],
              metrics=granted.may_scrape_metrics() is None, admin=granted.may_administer() is None)
