"""One typed settings object for all of K2; every field can be set with an env var `K2_<FIELD>`.

A small declarative model of its own: each field is a type annotation and a default (`Field` adds bounds and a
description), checked and converted when a Settings is made, with explicit values winning over `K2_*` variables.
It was a pydantic model (and before that pydantic-settings): building that model and importing pydantic took
~90 ms of every `k2` command's start, a fifth of a one-shot query (docs/benchmarks.md, CLI start-up).
"""

import os
import re
import types
import typing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from k2.errors import ConfigError
from k2.faults import parse_crash_spec

BrokerKind = Literal["tansu", "noida", "kafka"]


ENV_PREFIX = "K2_"


@dataclass(frozen=True)
class FieldSpec:
    """A setting's default, bounds and description; `repr=False` keeps a secret out of logs."""

    default: Any
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    description: str = ""
    repr: bool = True


def Field(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          description: str = "", repr: bool = True) -> Any:
    return FieldSpec(default, ge, gt, le, description, repr)


class SettingsError(ValueError):
    """Invalid settings: every problem at once, each with the field it is about (none for a rule across fields)."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(loc) or 'settings'}: {message}" for loc, message in problems))
        self.problems = problems

    def errors(self) -> list[dict[str, Any]]:
        return [{"loc": loc, "msg": message} for loc, message in self.problems]


class Settings:
    """K2 configuration. Defaults give the embedded profile: local broker, SQLite catalog, local warehouse."""

    model_fields: typing.ClassVar[dict[str, FieldSpec]] = {}
    _types: typing.ClassVar[dict[str, Any]] = {}

    def __init__(self, **values: Any) -> None:
        wanted = {f"{ENV_PREFIX}{name}".upper(): name for name in self.model_fields}
        found = {wanted[key.upper()]: value for key, value in os.environ.items() if key.upper() in wanted}
        given = {**found, **{k: v for k, v in values.items() if k in self.model_fields}}
        problems: list[tuple[tuple[str, ...], str]] = []
        for name, spec in self.model_fields.items():
            try:
                value = _convert(self._types[name], _BEFORE.get(name, _same)(given[name])) if name in given \
                    else spec.default
                _check_bounds(spec, value)
                value = _VALIDATORS.get(name, _same)(value)
            except (ValueError, TypeError) as exc:
                problems.append(((name,), str(exc)))
                continue
            self.__dict__[name] = value
        if not problems:
            try:
                self._catalog_complete()
            except ValueError as exc:
                problems.append(((), str(exc)))
        if problems:
            raise SettingsError(problems)

    def model_copy(self, update: dict[str, Any] | None = None) -> "Settings":
        """A copy with `update` applied as given (not re-read from the environment, nor checked)."""
        copy = object.__new__(type(self))
        copy.__dict__.update({name: self.__dict__[name] for name in self.model_fields})
        copy.__dict__.update(update or {})
        return copy

    def model_dump(self, exclude_defaults: bool = False) -> dict[str, Any]:
        return {name: self.__dict__[name] for name, spec in self.model_fields.items()
                if not exclude_defaults or self.__dict__[name] != spec.default}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the pydantic model it replaced

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={self.__dict__[name]!r}" for name, spec in self.model_fields.items() if spec.repr)
        return f"Settings({shown})"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "WARNING", description="Log level of K2's own messages on stderr (INFO shows assignments, DEBUG every commit)."
    )
    home: Path = Field(Path(".k2"), description="Directory holding all local state (catalog, warehouse, broker).")

    # Kafka
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset = the local broker managed by `k2 broker`."
    )
    kafka_connect_timeout_seconds: float = Field(
        15.0, gt=0, description="How long to retry reaching Kafka at start before giving up with an error."
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry URL; unset = the local file registry in K2_HOME/registry."
    )
    broker: BrokerKind = Field(
        "tansu", description="Which local Kafka-protocol broker `k2` manages: tansu, noida, or kafka (real Apache "
        "Kafka in KRaft mode, after `k2 broker fetch --kind kafka`)."
    )
    kafka_version: str = Field("4.4.0", description="The Apache Kafka version `k2 broker fetch --kind kafka` pins.")
    kafka_dist: Path | None = Field(
        None, description="Where the fetched Kafka jars are; unset = <home>/cache/kafka-<version>."
    )
    kafka_jvm_options: str = Field(
        "-Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
        description="JVM options of the local Apache Kafka broker (C1 only and the serial collector: half the "
        "start-up CPU on a small machine).",
    )
    topic_trades: str = "k2.trades.v1"
    topic_quotes: str = "k2.quotes.v1"
    topic_reference: str = "k2.reference.v1"
    topic_corporate_actions: str = "k2.corporate-actions.v1"
    topic_dlq: str = Field("k2.dlq.v1", description="Dead-letter topic for records that cannot be landed.")
    topic_partitions: int = Field(4, ge=1)
    consumer_group: str = "k2-ingest"
    consumer_instance_id: str | None = Field(
        None,
        description="Static group membership id (KIP-345): a restarted consumer with the same id takes its "
        "partitions back at once. Each concurrent consumer needs its own id.",
    )
    session_timeout_ms: int = Field(6000, ge=1000, description="Kafka consumer group session timeout.")
    producer_linger_ms: int = Field(5, ge=0)
    producer_message_timeout_ms: int = Field(
        60_000, ge=1000, description="How long the producer retries a record before reporting it undelivered."
    )
    producer_fatal_retries: int = Field(
        2, ge=0, description="Times a load starts over with a new producer after the idempotent producer's fatal error."
    )
    producer_queue_max_messages: int = Field(500_000, ge=1000, description="Bound on the producer's queue.")

    # Ingest
    consume_batch: int = Field(10_000, ge=1, description="Records fetched per consume() call.")
    ingest_commit_rows: int = Field(250_000, ge=1, description="Rows buffered before one Iceberg commit.")
    ingest_commit_seconds: float = Field(5.0, gt=0, description="Max seconds rows wait before a commit.")
    ingest_commit_min_seconds: float = Field(
        1.0, ge=0,
        description="A caught-up consumer lands what it holds once the oldest row has waited this long: a slow "
        "stream commits at most about once per this interval instead of on every pause (snapshot count).",
    )
    ingest_idle_seconds: float = Field(3.0, gt=0, description="`k2 ingest` stops after this long with no data.")
    max_future_skew_seconds: float = Field(
        300.0, ge=0, description="Ticks stamped further than this in the future go to the dead-letter topic."
    )
    csv_chunk_rows: int = Field(100_000, ge=1, description="Rows read from a CSV file per chunk.")
    dlq_replay_chunk: int = Field(
        10_000, ge=1, description="Dead letters re-driven per step of `k2 dlq replay` (acknowledged, then marked)."
    )
    crash_at: str | None = Field(
        None, description="Tests only: exit hard at a named point of the ingest commit path, POINT[@N] (k2.faults)."
    )

    # Lake
    catalog_name: str = Field("k2", description="Catalog name (a Spark or Trino JDBC catalog must use the same).")
    catalog_type: Literal["sql", "rest"] = Field(
        "sql", description="Iceberg catalog kind: sql (SQLite or PostgreSQL through SQLAlchemy) or rest (an Iceberg "
        "REST catalog)."
    )
    catalog_uri: str | None = Field(
        None, description="sql: SQLAlchemy URI (postgresql+psycopg://user:pw@host/db); rest: the catalog's URL. "
        "Unset = SQLite in home."
    )
    catalog_lock_wait_seconds: float = Field(
        30.0, ge=0, description="How long a SQLite catalog waits for a lock another process holds (a long write, "
        "a backup tool, a sqlite3 shell) before a commit fails."
    )
    catalog_credential: str | None = Field(
        None, repr=False, description="REST catalog OAuth2 client credentials, CLIENT_ID:CLIENT_SECRET."
    )
    warehouse: str | None = Field(
        None, description="Warehouse location (a directory, or s3://bucket/prefix); unset = <home>/warehouse. A "
        "REST catalog may name its warehouse instead (e.g. s3://warehouse)."
    )
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL for s3:// warehouses (MinIO, SeaweedFS, ...); unset = AWS."
    )
    s3_access_key_id: str | None = Field(None, description="S3 access key id (unset = the AWS credential chain).")
    s3_secret_access_key: str | None = Field(None, repr=False, description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    namespace: str = "market"
    symbol_buckets: int = Field(16, ge=1, description="bucket(N, symbol) partition count.")
    row_group_rows: int = Field(
        16_384, ge=100, description="Rows per Parquet row group in the tick tables: a symbol-day query reads and "
        "decodes only its symbol's row groups (docs/decisions/0019).",
    )
    materialize_bars: bool = Field(
        True, description="Keep the bars_1m table (1-minute partial bars of the trades) up to date at ingest."
    )

    # Distributed engines on the same tables (k2.engines)
    trino_version: str = Field("476", description="trino-server version `k2 trino fetch` pins (newest on Maven "
                               "Central; needs Java 24+).")
    trino_dist: Path | None = Field(None, description="Where Trino is unpacked; unset = <home>/cache/trino.")
    trino_java_home: Path | None = Field(None, description="A Java 24+ JDK for Trino; unset = newest in /usr/lib/jvm.")
    spark_jars: Path | None = Field(
        None, description="Where `k2 spark fetch` puts Iceberg's Spark runtime and the JDBC drivers; unset = "
        "<home>/cache/spark-iceberg-<version>."
    )

    # Query
    query_cache_mb: int = Field(
        1024, ge=0, description="Hot tier: MiB of decoded data files a query process keeps in memory (0 = off)."
    )
    maintain_retain_hours: float = Field(
        168.0, ge=0, description="`k2 maintain` keeps snapshots younger than this for time travel (hours)."
    )
    maintain_keep_snapshots: int = Field(10, ge=1, description="... and always the newest N of the history.")
    maintain_orphan_min_age_hours: float = Field(
        24.0, ge=0, description="Unreferenced files younger than this are left alone (a commit may be in flight)."
    )
    query_sql_max_rows: int = Field(1_000_000, ge=1, description="Rows `k2 query sql` returns at most.")
    query_sql_timeout_seconds: float = Field(30.0, gt=0, description="`k2 query sql` stops a query after this.")

    # API (`k2 serve`)
    api_host: str = Field("127.0.0.1", description="Address `k2 serve` binds (loopback by default).")
    metrics_host: str = Field(
        "127.0.0.1", description="Address `k2 ingest --metrics-port` binds (loopback by default)."
    )
    api_port: int = Field(8000, ge=1, le=65535, description="Port of `k2 serve`.")
    api_workers: int = Field(1, ge=1, description="Worker processes of `k2 serve`.")
    api_cors_origins: str = Field("", description="Origins allowed by CORS, comma-separated (none by default).")
    api_console: bool = Field(True, description="Serve the web console at / (docs/console.md).")
    api_max_range_days: float = Field(
        31.0, gt=0, description="Widest start-to-end window of a tick or as-of request (page through longer ones)."
    )

    api_cache_mb: int = Field(
        64, ge=0, description="Hot cache of encoded answers (bars, VWAP, summaries, last) per worker; 0 = off."
    )
    api_cache_redis: bool = Field(
        False, description="Also keep the hot cache's answers in Redis (K2_REDIS_URL), shared by every worker."
    )

    # API security (docs/security.md)
    api_auth: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on when `k2 serve` binds a non-loopback address, off on loopback."
    )
    api_keys_db: Path | None = Field(None, description="API key store (SQLite); default $K2_HOME/auth.db.")
    api_roles_file: Path | None = Field(None, description="Roles and their entitlements (TOML); default: built-in.")
    api_audit_log: Path | None = Field(None, description="Audit log of authorization decisions; default "
                                       "$K2_HOME/audit.log.")
    oidc_issuer: str = Field("", description="OIDC issuer whose bearer tokens are accepted (none by default).")
    oidc_audience: str = Field("", description="The `aud` a token must carry (required with an issuer).")
    oidc_jwks_url: str = Field("", description="The issuer's JWKS; default: from its discovery document.")
    oidc_roles_claim: str = Field("roles", description="The token claim holding K2 role names (a dotted path).")
    oidc_algorithms: str = Field("RS256,ES256", description="Signature algorithms accepted (never `none`).")

    # API rate limits (docs/security.md, "Rate limits"): a token bucket per caller and route class, written
    # LIMIT/PERIOD[ burst B] — LIMIT requests per PERIOD (s, min, h or d, optionally a count: 10s) sustained, and a
    # bucket of B requests (default LIMIT) a caller at rest may spend at once
    api_rate_limit: Literal["on", "off"] = Field("on", description="Per-caller rate limits on the /v1 routes; "
                                                 "off = none.")
    api_rate_point: str = Field("1000/s burst 2000", description="Point queries: /v1/trades/last, /v1/quotes/last, "
                                "/v1/symbols, /v1/reference, /v1/corporate-actions, /v1/snapshots, /v1/quality.")
    api_rate_analytics: str = Field("100/s burst 200", description="Analytics: /v1/bars, /v1/vwap, /v1/summary, "
                                    "/v1/asof.")
    api_rate_ticks: str = Field("20/s burst 100", description="Tick pages: /v1/trades, /v1/quotes.")
    api_rate_stream: str = Field("1/s burst 10", description="Replay streams opened: /v1/replay.")
    redis_url: str = Field("", description="Redis shared by `k2 serve` workers (redis://[:password@]host:port/db): "
                           "rate-limit counters; unset = in-process counters, per worker.")

    # Replay
    replay_memory_mb: int = Field(
        1024, ge=64, description="Memory a replay may use to sort one day of events (more spills to a temp file)."
    )

    def _catalog_complete(self) -> None:
        if self.catalog_type == "rest" and not self.catalog_uri:
            raise ValueError("K2_CATALOG_TYPE=rest needs K2_CATALOG_URI, the REST catalog's URL (http://host:port)")
        if self.catalog_type == "rest" and not self.catalog_uri.startswith(("http://", "https://")):  # type: ignore[union-attr]
            raise ValueError(f"K2_CATALOG_URI {self.catalog_uri!r} is not a REST catalog URL (http:// or https://)")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ValueError("set both K2_S3_ACCESS_KEY_ID and K2_S3_SECRET_ACCESS_KEY, or neither")

    @property
    def home_path(self) -> Path:
        """K2_HOME as an absolute path, whether or not it exists (nothing is created)."""
        return self.home.expanduser().resolve()

    @cached_property
    def home_dir(self) -> Path:
        """K2_HOME for commands that write: created if missing; a clear ConfigError if it is a file or cannot be
        written."""
        path = self.home_path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"K2_HOME {path} is a file, not a directory: point --home or K2_HOME at a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create K2_HOME {path}: {exc.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"K2_HOME {path} is not writable (read-only file system or permissions)")
        return path

    def existing_home(self) -> Path:
        """K2_HOME for commands that only read: it must already exist (it may be read-only)."""
        path = self.home_path
        if not path.exists():
            raise ConfigError(
                f"K2_HOME {path} does not exist: nothing has landed there yet (run `k2 demo` or `k2 ingest`, "
                "or point --home / K2_HOME at your data)"
            )
        if not path.is_dir():
            raise ConfigError(f"K2_HOME {path} is a file, not a directory: point --home or K2_HOME at a directory")
        return path

    @property
    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.home_path / 'catalog.db'}"

    @property
    def resolved_warehouse(self) -> str:
        return self.warehouse or (self.home_path / "warehouse").as_uri()

    @property
    def embedded_catalog(self) -> bool:
        """The default: a SQLite catalog file and a warehouse in K2_HOME."""
        return self.catalog_type == "sql" and not self.catalog_uri

    def s3_properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties for an s3:// warehouse (empty when nothing is configured)."""
        found = {
            "s3.endpoint": self.s3_endpoint, "s3.access-key-id": self.s3_access_key_id,
            "s3.secret-access-key": self.s3_secret_access_key,
        }
        properties = {key: value for key, value in found.items() if value}
        if properties:
            properties["s3.region"] = self.s3_region
        if self.s3_endpoint:  # MinIO and SeaweedFS serve buckets by path, not by host name
            properties["s3.path-style-access"] = "true"
        return properties

    @property
    def resolved_trino_dist(self) -> Path:
        return self.trino_dist or self.home_path / "cache" / "trino"

    @property
    def resolved_kafka_dist(self) -> Path:
        return self.kafka_dist or self.home_path / "cache" / f"kafka-{self.kafka_version}"

    @property
    def registry_dir(self) -> Path:
        return self.home_path / "registry"

    @property
    def broker_dir(self) -> Path:
        return self.home_path / "broker"

    @property
    def keys_db(self) -> Path:
        return self.api_keys_db or self.home_path / "auth.db"

    @property
    def audit_log(self) -> Path:
        return self.api_audit_log or self.home_path / "audit.log"


_PERIOD_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                   "d": 86400, "day": 86400}
_RATE = re.compile(r"(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?(?:\s+burst\s+(\d+))?",
                   re.IGNORECASE)


def parse_rate(text: str) -> tuple[int, int, int]:
    """A rate limit `LIMIT/PERIOD[ burst B]` ("1000/s", "600/min", "1/3s burst 3") as (LIMIT, PERIOD in
    milliseconds, B); B is LIMIT when not given."""
    found = _RATE.fullmatch(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a rate limit: write LIMIT/PERIOD, optionally with a burst, e.g. "
                         "'1000/s', '600/min', '20/s burst 100' (periods: s, min, h, d, or a count of them: 10s)")
    limit, count, burst = int(found.group(1)), int(found.group(2) or 1), found.group(4)
    unit = _PERIOD_SECONDS[found.group(3).lower()]
    bucket = int(burst) if burst is not None else limit
    if limit < 1 or count < 1 or bucket < 1:
        raise ValueError(f"{text!r}: the limit, the period and the burst must be at least 1")
    return limit, count * unit * 1000, bucket


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ checks and conversion

_TRUE, _FALSE = {"1", "true", "yes", "on", "y", "t"}, {"0", "false", "no", "off", "n", "f"}


def _convert(kind: Any, value: Any) -> Any:
    """`value` (a Python value, or the text of an env var) as a `kind` field holds it, or a ValueError saying why
    not."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(inner, value)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ValueError(f"should be {' or '.join(repr(c) for c in choices)}, not {value!r}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"should be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str) or (
                isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"should be a whole number, not {value!r}")
        try:
            return int(value.strip()) if isinstance(value, str) else int(value)
        except ValueError:
            raise ValueError(f"should be a whole number, not {value!r}") from None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"should be a number, not {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"should be a number, not {value!r}") from None
    if kind is Path:
        if not isinstance(value, str | os.PathLike):
            raise ValueError(f"should be a path, not {value!r}")
        return Path(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"should be text, not {value!r}")
        return value
    raise TypeError(f"settings of type {kind!r} are not supported")


def _check_bounds(spec: FieldSpec, value: Any) -> None:
    if value is None or not isinstance(value, int | float):
        return
    if spec.ge is not None and value < spec.ge:
        raise ValueError(f"should be at least {spec.ge:g}, not {value!r}")
    if spec.gt is not None and value <= spec.gt:
        raise ValueError(f"should be greater than {spec.gt:g}, not {value!r}")
    if spec.le is not None and value > spec.le:
        raise ValueError(f"should be at most {spec.le:g}, not {value!r}")


def _same(value: Any) -> Any:
    return value


def _rate(value: str) -> str:
    parse_rate(value)
    return value


def _crash_point(value: str | None) -> str | None:
    if value:
        parse_crash_spec(value)
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


_BEFORE: dict[str, typing.Callable[[Any], Any]] = {"log_level": _upper}
_VALIDATORS: dict[str, typing.Callable[[Any], Any]] = {
    "api_rate_point": _rate, "api_rate_analytics": _rate, "api_rate_ticks": _rate, "api_rate_stream": _rate,
    "crash_at": _crash_point,
}


def _declare(cls: type[Settings]) -> None:
    """Read the fields off the class body: each annotated attribute, its default or its `Field`."""
    for name, kind in cls.__annotations__.items():
        if name.startswith("_") or name == "model_fields":  # the class-level registries, not settings
            continue
        declared = cls.__dict__.get(name)
        spec = declared if isinstance(declared, FieldSpec) else FieldSpec(declared)
        cls.model_fields[name] = spec
        cls._types[name] = kind
        if isinstance(declared, FieldSpec):
            delattr(cls, name)  # instances hold the values; the class keeps only the specs in model_fields


_declare(Settings)
