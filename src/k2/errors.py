"""K2's exception types, all under one base class: `K2Error`.

A K2Error means the input, the environment or a service is wrong, not that K2 has a bug: the CLI prints its
message as one line and exits non-zero, with no traceback. This module imports nothing from the rest of K2, so
every package can raise these without import cycles.
"""

from __future__ import annotations


class K2Error(Exception):
    """Base of every error K2 raises on purpose. The message says what is wrong and what to do about it."""


class ConfigError(K2Error):
    """A setting or K2_HOME is unusable (a file where a directory should be, not writable, missing)."""


class InputError(K2Error):
    """A file cannot be read as asked: missing, a directory, empty, or not in any layout K2 knows."""


class ConflictError(InputError):
    """The request clashes with what exists: a tag name already in use."""


class BrokerError(K2Error):
    """The local broker could not be started, found or stopped."""


class KafkaUnavailableError(K2Error):
    """No Kafka broker answered at the configured bootstrap servers, or the broker was lost mid-run."""


class DeliveryError(K2Error):
    """Some records were not acknowledged by the broker."""


class ProducerFatalError(DeliveryError):
    """The idempotent producer entered its fatal state (the broker lost or reissued its producer id); records from
    there on were not delivered. A new producer, re-sending everything, may succeed: the lake drops duplicates."""


class DeadLetterError(K2Error):
    """Dead letters could not be written or re-driven; nothing unacknowledged is marked done."""


class NoPartitionsAssignedError(K2Error):
    """The consumer group gave this consumer no partitions in time."""


class CatalogError(K2Error):
    """The Iceberg catalog or a table's metadata cannot be opened or read."""


class QueryError(K2Error, ValueError):
    """A query parameter is invalid (names the parameter and what is accepted)."""


class SnapshotNotFoundError(QueryError):
    """A snapshot id that the table does not have (the message lists the ones it has)."""


class SchemaError(K2Error):
    """Base of schema registry errors."""


class SchemaNotFoundError(SchemaError, LookupError):
    """A record names a schema id the registry does not know."""


class SchemaCompatibilityError(SchemaError):
    """A new schema version would break readers of the subject (BACKWARD compatibility)."""


class InvalidSchemaError(SchemaError):
    """A schema that does not parse as Avro."""


class EncodeError(K2Error, ValueError):
    """A column cannot be encoded with the writer schema (names the field and the first bad row)."""


class DecodeError(K2Error, ValueError):
    """A block of Avro records does not decode; the caller isolates the bad records one by one."""


class UnsupportedSchemaError(K2Error, ValueError):
    """The vectorised decoder does not handle this schema; the general decoder takes the batch."""


class OutputError(K2Error):
    """A result cannot be written the way asked (e.g. binary Parquet onto a terminal)."""


class UnknownSymbolError(QueryError):
    """A symbol the table has never held; the message suggests close ones."""


class RecoveryError(K2Error):
    """A backup cannot be made or restored (no such point, a target that holds data, a copy that failed)."""


class StorageError(K2Error):
    """The lake's storage (a local disk, S3) failed: unreachable, full, or refusing a write."""
