"""The exception types that mean "the user's input or environment is wrong", not "K2 has a bug"."""

from __future__ import annotations

from pydantic import ValidationError

from k2.ingest.broker import BrokerError
from k2.ingest.csv_loader import CsvLayoutError
from k2.ingest.dlq import DeadLetterError
from k2.ingest.kafka import KafkaUnavailableError
from k2.ingest.producer import DeliveryError
from k2.ingest.registry import SchemaCompatibilityError, SchemaNotFoundError
from k2.query.engine import QueryError

K2_ERRORS: tuple[type[Exception], ...] = (
    BrokerError, CsvLayoutError, DeadLetterError, DeliveryError, KafkaUnavailableError, SchemaNotFoundError,
    QueryError, SchemaCompatibilityError, ValidationError,
)
