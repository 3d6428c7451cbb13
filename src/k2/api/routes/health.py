"""Liveness, readiness (the catalog answers, the broker answers) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from k2.api import deps
from k2.api.models import Health
from k2.schemas import Dataset

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Health)
def live() -> Any:
    """The process serves requests."""
    return Health(status="ok")


@router.get("/health/ready", response_model=Health, responses={503: {"model": Health}})
def ready(request: Request) -> Any:
    """The catalog can be read and the Kafka broker answers; 503 says which is not."""
    checks = {"catalog": _catalog(request), "kafka": _kafka(request)}
    healthy = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if healthy else "unavailable", checks=checks)
    return body if healthy else JSONResponse(body.model_dump(), status_code=503)


def _catalog(request: Request) -> str:
    try:
        deps.engine(request).table(Dataset.TRADES)
    except Exception as exc:
        return f"failed: {exc}"
    return "ok"


def _kafka(request: Request) -> str:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from k2.kafka.broker import resolve_bootstrap
    from k2.kafka.config import client_config

    try:
        client = AdminClient(client_config(resolve_bootstrap(deps.settings(request))))  # type: ignore[arg-type]
        try:
            client.list_topics(timeout=2)
        finally:
            del client  # its threads stop now, not at some later collection (they retry and log meanwhile)
    except Exception as exc:
        return f"failed: {str(exc).splitlines()[0][:200]}"
    return "ok"


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus text exposition of this process's metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
