"""The pipeline as the broker sees it: each ingest group's lag, and the dead letters with their reasons (the
console's pipeline view; landed rows, commits and gaps come from `/v1/snapshots` and `/v1/quality`)."""

from __future__ import annotations

from typing import Annotated

from confluent_kafka import KafkaException
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from k2.api import models, watch
from k2.api.errors import ApiError

router = APIRouter(tags=["pipeline"], responses={**models.ERROR_RESPONSES, 503: {
    "model": models.ErrorBody, "description": "No Kafka broker is configured or running, or it did not answer."}})


class GroupLag(BaseModel):
    dataset: str
    topic: str
    group: str
    end_offset: int  # records ever produced to the topic (sum over partitions)
    committed: int  # of which the ingest group has landed and committed
    lag: int


class Lag(BaseModel):
    broker_up: bool
    topics: list[GroupLag]


class Letter(BaseModel):
    source: str  # topic[partition]@offset of the rejected record
    failed_at: str
    key: str
    bytes: int
    error: str


class ReasonCount(BaseModel):
    reason: str
    count: int


class DeadLetters(BaseModel):
    count: int
    by_reason: list[ReasonCount]
    latest: list[Letter]


def _unavailable(what: str) -> ApiError:
    return ApiError(503, "kafka_unavailable", f"{what}: no Kafka broker is configured or running here (start one "
                    "with `k2 broker start`, or set K2_KAFKA_BOOTSTRAP)")


@router.get("/pipeline/lag", response_model=Lag)
def lag(request: Request) -> Lag:
    """Each ingest group's lag: records on its topic not yet landed and committed (measured at the broker, so a
    stopped consumer's lag keeps growing). `broker_up` is false when the broker did not answer."""
    collector = watch.lag_collector(request)
    if collector is None:
        raise _unavailable("lag")
    measured = collector.measure()
    topics = [GroupLag(dataset=t.dataset.value, topic=t.topic, group=t.group, end_offset=t.end_offset,
                       committed=t.committed, lag=t.lag) for t in measured or []]
    return Lag(broker_up=measured is not None, topics=topics)


@router.get("/pipeline/dead-letters", response_model=DeadLetters)
def dead_letters(request: Request, latest: Annotated[int, Query(ge=0, le=50)] = 20) -> DeadLetters:
    """Records that could not be landed: how many, grouped by reason, and the latest ones (newest first)."""
    tail = watch.dead_letter_tail(request)
    if tail is None:
        raise _unavailable("dead letters")
    try:
        view = tail.look(latest)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise ApiError(503, "kafka_unavailable", f"dead letters: the broker did not answer ({reason})") from None
    letters = [Letter(source=f"{d.source_topic}[{d.source_partition}]@{d.source_offset}", failed_at=d.failed_at,
                      key=(d.key or b"").decode(errors="replace"), bytes=len(d.value), error=d.error)
               for d in view.latest]
    return DeadLetters(count=view.count, by_reason=[ReasonCount(reason=r, count=n) for r, n in view.by_reason],
                       latest=letters)
