"""OpenTelemetry tracing, off unless an OTLP endpoint is configured by the standard `OTEL_*` variables
(docs/tracing.md).

Off, nothing of OpenTelemetry is imported (the start-up time of `k2 query` counts) and every helper is a no-op: `span()`
returns one shared do-nothing context manager. On, spans go through a BatchSpanProcessor to the OTLP/HTTP (protobuf)
exporter: exporting happens on the processor's thread, never on the ingest or query path, and the tracer provider's
own atexit hook (shutdown_on_exit) flushes what is left when the process ends.

The decision is taken once per process, at the first span, so every process (a `k2` command, each API worker) sets
itself up without a call from its entry point.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from opentelemetry.context import Context as Context
    from opentelemetry.trace import Tracer
else:
    Context = object

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]
KafkaHeaders = list[tuple[str, str | bytes | None]]  # confluent-kafka's record headers
Kind = Literal["internal", "server", "client", "producer", "consumer"]

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_SERVICE = "k2"
MAX_LINKS = 64  # a consumed batch links the producer batches it holds, up to this many


class Span(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def update_name(self, name: str) -> None: ...


class _NoSpan:
    """The span of a process that does not trace: a reusable context manager that does nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def update_name(self, name: str) -> None:
        return None


_NO_SPAN = _NoSpan()
_lock = threading.Lock()
_decided = False
_tracer: Tracer | None = None


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def _get_tracer() -> Tracer | None:
    global _decided, _tracer
    if not _decided:
        with _lock:
            if not _decided:
                _tracer = _start() if requested() else None
                _decided = True
    return _tracer


def enabled() -> bool:
    return (_tracer if _decided else _get_tracer()) is not None


def _start() -> Tracer:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    provider = TracerProvider(resource=resource)  # its atexit hook flushes the processor at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers, timeout: OTEL_*
    trace.set_tracer_provider(provider)
    return provider.get_tracer("k2")


def span(
    name: str, attributes: Attributes | None = None, *, kind: Kind = "internal", parent: Context | None = None,
    links: Sequence[Context] = (), start_ns: int | None = None,
) -> AbstractContextManager[Span]:
    """A span around the `with` block, current inside it. `parent` (default: the current context) is a context from
    `current()` or an extract function; `links` relate the span to further traces; `start_ns` (wall clock, ns) backdates
    its start."""
    tracer = _tracer if _decided else _get_tracer()
    if tracer is None:
        return _NO_SPAN
    from opentelemetry.trace import Link, SpanKind, get_current_span

    return tracer.start_as_current_span(
        name, context=parent, kind=SpanKind[kind.upper()], attributes=attributes, start_time=start_ns,
        links=[Link(get_current_span(c).get_span_context()) for c in links],
    )


def set_error(span: Span, description: str) -> None:
    """Mark `span` as failed (a request answered with a 5xx: no exception went through the span)."""
    if isinstance(span, _NoSpan):
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))  # type: ignore[attr-defined]


def current() -> Context | None:
    """The current trace context, to parent spans on another thread (None when not tracing)."""
    if not enabled():
        return None
    from opentelemetry.context import get_current

    return get_current()


def kafka_headers() -> KafkaHeaders | None:
    """The current span's W3C trace context (traceparent, tracestate) as Kafka record headers; None when not tracing."""
    if not enabled():
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()] or None


def from_kafka_headers(records: Iterable[KafkaHeaders | None]) -> list[Context]:
    """The distinct trace contexts in the headers of a batch's records (`map(Message.headers, messages)`), the
    first record's first, at most MAX_LINKS + 1. The iterable is not consumed when not tracing."""
    if not enabled():
        return []
    # K2's producer sets the same headers on every record of a producer batch: a few distinct ones per batch
    distinct = dict.fromkeys(map(tuple, filter(None, records)))
    contexts: dict[tuple[int, int], Context] = {}
    for headers in distinct:
        context = _extract({key: value.decode(errors="replace") if isinstance(value, bytes) else value
                            for key, value in headers if value is not None})
        if context is not None:
            contexts.setdefault(_span_key(context), context)
            if len(contexts) > MAX_LINKS:
                break
    return list(contexts.values())


def from_http_headers(headers: Mapping[str, str]) -> Context | None:
    """The caller's trace context from an HTTP request's headers (traceparent), if it sent a valid one."""
    return _extract(headers) if enabled() else None


def _extract(carrier: Mapping[str, str]) -> Context | None:
    from opentelemetry.propagate import extract
    from opentelemetry.trace import get_current_span

    context = extract(carrier)
    return context if get_current_span(context).get_span_context().is_valid else None


def _span_key(context: Context) -> tuple[int, int]:
    from opentelemetry.trace import get_current_span

    span_context = get_current_span(context).get_span_context()
    return span_context.trace_id, span_context.span_id
