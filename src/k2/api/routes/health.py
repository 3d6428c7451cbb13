"""Liveness, readiness (the catalog answers, the broker answers) and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from k2.api import deps, watch
from k2.api.auth.guard import authorize_metrics
from k2.api.models import Health
from k2.schemas import Dataset

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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


@router.get("/metrics", response_class=Response, dependencies=[Depends(authorize_metrics)],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's metrics, and the ingest groups' lag read from the broker."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return Response(generate_latest(REGISTRY) + generate_latest(_lag_registry(request)),
                    media_type=CONTENT_TYPE_LATEST)


def _lag_registry(request: Request) -> CollectorRegistry:
    """The lag collector's registry, made at the first scrape that finds a broker; until then the exposition says
    the broker is down."""
    from prometheus_client import CollectorRegistry, Gauge

    state = request.app.state
    found: CollectorRegistry | None = getattr(state, "lag_registry", None)
    if found is not None:
        return found
    registry = CollectorRegistry()
    collector = watch.lag_collector(request)
    if collector is None:
        Gauge("k2_kafka_up", "1 if the Kafka broker answered the lag probe at this scrape", registry=registry).set(0)
        return registry
    registry.register(collector)
    state.lag_registry = registry
    return registry
