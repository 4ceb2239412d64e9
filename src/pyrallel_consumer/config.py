"""ConsumerConfig: every knob with a type, a default, a validation rule and a ``PYRALLEL_*`` env var."""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import logging
import operator
import os
import re
import socket
import types
import typing
from collections.abc import Collection, Iterable
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from pyrallel_consumer.deserialization import Deserializer
from pyrallel_consumer.kafka.property_check import describe_refusal, is_secret_property, librdkafka_refusal
from pyrallel_consumer.observability.logging import LogFormat
from pyrallel_consumer.record import Ordering
from pyrallel_consumer.references import reference_of, resolve

_TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

# librdkafka properties the library sets itself: a user value would break commit safety or duplicate a field.
OWNED_KAFKA_PROPERTIES: dict[str, str] = {
    "enable.auto.commit": "commits are made by the library at the lowest incomplete offset",
    "enable.auto.offset.store": "offsets are stored by the library only for completed records",
    "bootstrap.servers": "use the bootstrap_servers field",
    "group.id": "use the group_id field",
    "group.instance.id": "use the group_instance_id field",
    "group.protocol": "use the group_protocol field",
    "auto.offset.reset": "use the auto_offset_reset field",
    "partition.assignment.strategy": "the library needs cooperative-sticky (incremental) assignment",
    "enable.partition.eof": "the library reads topics continuously",
}
SHARE_OWNED_KAFKA_PROPERTIES: dict[str, str] = {
    "share.acknowledgement.mode": "the library acknowledges every record itself (explicit mode: accept, release or "
                                  "reject as it settles)",
    "bootstrap.servers": "use the bootstrap_servers field",
    "group.id": "use the group_id field",
    "max.poll.records": "use max_in_flight (one poll's records are what an instance handles at once, under lock)",
}
"""librdkafka properties of the share consumer (group_type='share') the library sets itself."""
DLQ_OWNED_PROPERTIES = ("acks", "request.required.acks", "enable.idempotence", "transactional.id")
OUTPUT_OWNED_PROPERTIES = (*DLQ_OWNED_PROPERTIES, "transaction.timeout.ms", "bootstrap.servers")
"""Properties of the transactional producer that exactly-once depends on (or that have a field of their own)."""
"""Properties of the dead-letter producer that decide whether an acknowledged copy is durable."""
BATCH_FIELDS = ("batch_max_records", "batch_max_bytes", "batch_linger_ms")
"""Fields that apply to batch handlers only: setting one for a per-record handler is refused by PyrallelConsumer."""
REVOKE_MARGIN_MS = 30_000
"""How much longer than rebalance_grace_ms the poller waits for a revocation to settle on the event loop."""
_ENUM_PROPERTIES: dict[str, tuple[str, ...]] = {
    "isolation.level": ("read_committed", "read_uncommitted"),
    "security.protocol": ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"),
}
_DECIMAL_RE = re.compile(r"[+-]?[0-9]+")
TOOLING_VARIABLES = frozenset({
    "PYRALLEL_CONNECT_URL", "PYRALLEL_KAFKA_RUN_DIR", "PYRALLEL_CACHE_DIR", "PYRALLEL_BENCH_HARNESS_DIR",
    "PYRALLEL_CONSUME_STATE", "PYRALLEL_LOAD_RATE", "PYRALLEL_LOAD_SIZE", "PYRALLEL_FAULT_DELAY_MS",
    "PYRALLEL_FAULT_FAILURE_RATE", "PYRALLEL_FAULT_COMMIT_DELAY_MS", "PYRALLEL_FAULT_STALL_MS",
    "PYRALLEL_FAULT_STALL_AFTER_S", "PYRALLEL_TEST_DIR", "PYRALLEL_TEST_BLOCK_OFFSET", "PYRALLEL_KAFKA_VERSION",
    "PYRALLEL_FAULT_KAFKA_RUN_DIR", "PYRALLEL_FAULT_RESULTS",
})
"""``PYRALLEL_*`` variables read by the project's CLI, test fixtures and benchmark harness, not config fields:
ConsumerConfig does not warn about them."""
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost: an address only this machine can reach.

    Called by ConsumerConfig's validation and by HttpServer.start() (event-loop thread) to decide whether a
    server without a bearer token needs the explicit opt-out / a WARNING. Other names are not resolved: a name
    that resolves to loopback today may not tomorrow.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_problem(token: str) -> str | None:
    """Why a bearer token could never match an ``Authorization`` header, or None when it is usable.

    The control server reads header values as latin-1 and strips surrounding whitespace, so a token that is
    blank, padded (e.g. a trailing newline from a secret file) or not printable ASCII would refuse every request.
    Called at construction of ConsumerConfig and HttpServer, so the mistake shows at start, not at the first switch.
    """
    if not token.strip():
        return "the bearer token must not be empty or whitespace only"
    if token != token.strip():
        return "the bearer token must not start or end with whitespace (a trailing newline from a secret file?)"
    if not (token.isascii() and token.isprintable()):
        return "the bearer token must be printable ASCII"
    return None


class ConsumerConfig(BaseSettings):
    """Configuration of a PyrallelConsumer; also read from ``PYRALLEL_<FIELD>`` env vars and ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="PYRALLEL_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        validate_default=True, frozen=True,
    )

    bootstrap_servers: str = Field(min_length=1, description="Kafka bootstrap address list, host:port[,...].")
    group_id: str = Field(min_length=1, max_length=255, description="Consumer group id.")
    topics: Annotated[list[str], NoDecode] = Field(
        min_length=1, description="Topics to subscribe to (env: comma-separated)."
    )
    ordering: Ordering = Field(
        default=Ordering.KEY, description="What may run concurrently: records of one key, of one partition, or any."
    )
    group_type: Literal["consumer", "share"] = Field(
        default="consumer",
        description="consumer: a consumer group (PyrallelConsumer); share: a share group (KIP-932, Kafka 4.2+; "
                    "PyrallelShareConsumer), whose records are acknowledged one by one and come in no order: "
                    "needs ordering='unordered' and at_least_once.",
    )
    engine: Literal["async", "process"] = Field(
        default="async", description="Execution engine: asyncio tasks or a pool of worker processes."
    )
    key_deserializer: Annotated[Deserializer | str | None, NoDecode] = Field(
        default=None,
        description="Turns record keys into objects: a confluent-kafka Deserializer (e.g. AvroDeserializer), a "
                    "function (data, ctx), or 'module:attr' naming one (the env form); unset: keys stay bytes. "
                    "engine=process: 'module:attr' or a top-level function (each worker imports its own).",
    )
    value_deserializer: Annotated[Deserializer | str | None, NoDecode] = Field(
        default=None,
        description="Turns record values into objects, as key_deserializer does for keys; a record that fails "
                    "to deserialize goes to the exhaustion policy without retries (docs/failure-handling.md).",
    )
    max_in_flight: int = Field(default=1000, ge=1, le=1_000_000,
                               description="Records handled at the same time, across all partitions.")
    queue_max_messages: int = Field(
        default=10_000, ge=1, le=10_000_000,
        description="Fetched records waiting for dispatch before fetching waits; a partition holding 1.5x "
                    "its share is paused until it is down to its share.",
    )
    queue_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, le=1 << 40,
        description="Bytes of the values of fetched records waiting for dispatch before fetching waits; "
                    "the same rules as queue_max_messages, whichever limit is reached first.",
    )
    max_pending_offsets: int = Field(
        default=100_000, ge=100, le=100_000_000,
        description="Offsets of one partition tracked from its lowest incomplete one up (done or not) before its "
                    "fetching pauses: bounds memory and commit work while one record blocks the partition.",
    )
    batch_max_records: int = Field(
        default=100, ge=1, le=100_000,
        description="With a batch_handler: records per handler call at most; no more than max_in_flight.",
    )
    batch_max_bytes: int = Field(
        default=1_048_576, ge=1, le=1 << 31,
        description="With a batch_handler: bytes of record values per handler call at most (a larger record goes "
                    "alone).",
    )
    batch_linger_ms: int = Field(
        default=20, ge=0, le=60_000,
        description="With a batch_handler: how long ready records that do not fill a batch wait for more before "
                    "they go as a smaller batch (0: at once).",
    )
    commit_interval_ms: int = Field(
        default=1000, ge=10, le=600_000,
        description="at_least_once: the longest time between two asynchronous commits when no record completed (a "
                    "failed commit is tried again after it); exactly_once: the period of the transactions.",
    )
    commit_min_interval_ms: int = Field(
        default=10, ge=0, le=600_000,
        description="at_least_once: the shortest time between two asynchronous commits; a completed record is "
                    "committed about this long after it completed at most (one commit carries every completion in "
                    "between), so a crash runs about the last interval's records again. At most commit_interval_ms.",
    )
    task_timeout_ms: int = Field(default=60_000, ge=1, le=86_400_000,
                                 description="One handler attempt longer than this fails with a timeout.")
    max_retries: int = Field(default=3, ge=0, le=1000,
                             description="Retries after the first attempt before the exhaustion policy.")
    retry_backoff_ms: int = Field(default=100, ge=0, le=3_600_000,
                                  description="First retry delay; doubles per attempt, with full jitter.")
    max_retry_backoff_ms: int = Field(default=10_000, ge=0, le=3_600_000,
                                      description="Upper bound of one retry delay.")
    rebalance_grace_ms: int = Field(
        default=10_000, ge=0, le=600_000,
        description="On revoke: how long in-flight records of the revoked partitions may finish.",
    )
    drain_timeout_ms: int = Field(
        default=30_000, ge=0, le=3_600_000,
        description="On a draining stop or a pause: how long in-flight records may finish before they are cancelled.",
    )
    process_workers: int = Field(
        default=0, ge=0, le=1024,
        description="Worker processes of engine=process; 0 means one per CPU core.",
    )
    max_item_bytes: int = Field(
        default=1_048_576, ge=1024, le=256 * 1_048_576,
        description="engine=process: a record larger than this (serialised) fails with a clear error.",
    )
    max_tasks_per_child: int = Field(
        default=0, ge=0, le=100_000_000,
        description="engine=process: recycle a worker after about this many records (with jitter); 0 = never.",
    )
    ipc_batch_size: int = Field(
        default=64, ge=1, le=10_000,
        description="engine=process: work items and completions sent per IPC message at most.",
    )
    pause_mode: Literal["release", "hold"] = Field(
        default="release",
        description="Lifecycle pause: release the partitions to the group's other members (one group for both "
                    "colors, strategy C), or hold them without fetching (each color its own group, strategy B: no "
                    "rejoin at the next resume). group_type='share': release only.",
    )
    start_paused: bool = Field(
        default=False, description="Come up PAUSED (e.g. this color is not the active one) without processing."
    )
    color: str | None = Field(default=None, max_length=64, description="Blue/green color label, e.g. blue.")
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1, max_length=255,
        description="Name of this consumer instance in status, logs and metrics (default host-pid).",
    )
    control_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port of the HTTP lifecycle control server; off when unset."
    )
    control_host: str = Field(default="127.0.0.1", min_length=1, description="Address the control server binds to.")
    control_token: SecretStr | None = Field(
        default=None, min_length=1,
        description="Bearer token the control server requires, when set; printable ASCII without leading or "
                    "trailing whitespace (any other token could never match an Authorization header).",
    )
    control_insecure: bool = Field(
        default=False,
        description="Allow a control server without control_token on a non-loopback control_host (logged as a "
                    "WARNING): anyone who can reach the port can pause the consumer.",
    )
    control_max_connections: int = Field(
        default=16, ge=1, le=10_000,
        description="Connections the control server holds at once; more are closed at once, unanswered.",
    )
    control_max_generation_step: int = Field(
        default=16, ge=1, le=1_000_000,
        description="A lifecycle command's generation may be at most this far ahead of the consumer's; "
                    "a larger jump is refused (HTTP 409), the generation does not change.",
    )
    dlq_enabled: bool = Field(
        default=False, description="Publish records that failed every attempt to a dead-letter topic."
    )
    dlq_topic: str | None = Field(
        default=None, description="Dead-letter topic; default: the source topic plus dlq_suffix."
    )
    dlq_suffix: str = Field(default=".dlq", min_length=1, max_length=64, description="Suffix of default DLQ topics.")
    dlq_payload_mode: Literal["full", "metadata_only"] = Field(
        default="full", description="full copies key and value; metadata_only keeps them out (personal data)."
    )
    dlq_kafka: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties of the DLQ producer (env: JSON object); the durability settings "
                    "(acks, enable.idempotence, transactional.id) are the library's.",
    )
    max_blocking_ms: int = Field(
        default=0, ge=0, le=7 * 86_400_000,
        description="Fail a record that blocks its partition's commit longer than this (0 = off).",
    )
    missing_topic: Literal["fail", "wait"] = Field(
        default="fail", description="A subscribed topic that does not exist at start: fail at once, or wait for it."
    )
    group_instance_id: str | None = Field(
        default=None, min_length=1, max_length=255, description="Static membership id (optional)."
    )
    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic",
        description="classic (cooperative-sticky, client-side assignment) or consumer (KIP-848, broker-side).",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a group without a committed offset starts; group_type='share': set as the group's "
                    "share.auto.offset.reset at start (the broker's default, latest, skips what came before).",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties (env: JSON object); the library's own defaults "
                    "fetch.queue.backoff.ms=10 and fetch.wait.max.ms=100 can be overridden here.",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Port of the Prometheus /metrics HTTP server (0 = any free port); off when unset.",
    )
    metrics_host: str = Field(default="127.0.0.1", min_length=1, description="Address the metrics server binds to.")
    log_format: LogFormat = Field(
        default="text", description="text, or json (one object per line); applied by configure_logging()."
    )
    tracing_enabled: bool = Field(
        default=False,
        description="An OpenTelemetry span per handled record (and per batch), exported by the application's "
                    "tracer provider; needs the tracing extra: pip install 'pyrallel-consumer[tracing]'.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once: the outputs a handler returns and the offsets of the records they came from are "
                    "committed in one Kafka transaction per commit_interval_ms (the consumer reads read_committed).",
    )
    transactional_id: str | None = Field(
        default=None, min_length=1, max_length=255,
        description="exactly_once: transactional.id of the consumer's producer; default "
                    "pyrallel-<group_id>-<group_instance_id or instance_id>. A restarted instance with the same id "
                    "aborts its predecessor's open transaction at once.",
    )
    transaction_timeout_ms: int = Field(
        default=10_000, ge=1000, le=900_000,
        description="exactly_once: the broker aborts a transaction open longer than this (a crashed or stopped "
                    "producer's); must exceed commit_interval_ms. read_committed readers wait at most this long "
                    "behind a dead producer's transaction.",
    )
    transaction_max_records: int = Field(
        default=10_000, ge=1, le=10_000_000,
        description="exactly_once: a transaction commits early once this many outputs (dead-letter copies "
                    "included) were produced in it.",
    )
    output_kafka: dict[str, str] = Field(
        default_factory=dict,
        description="exactly_once: extra librdkafka properties of the transactional producer (env: JSON object); "
                    "transactional.id, transaction.timeout.ms, enable.idempotence and acks are the library's.",
    )

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"Invalid ConsumerConfig: unknown field(s) {', '.join(unknown)}")
        _warn_unknown_environment(type(self).model_fields)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        except SettingsError as exc:  # e.g. PYRALLEL_KAFKA that is not a JSON object
            raise ConfigError(f"Invalid ConsumerConfig from the environment: {exc}") from None

    @field_validator("*", mode="before")
    @classmethod
    def _strict_ints(cls, value: Any, info: ValidationInfo) -> Any:
        """Every int field (int or int | None) takes whole numbers only; see ``strict_int``."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if annotation is int or (isinstance(annotation, types.UnionType) and int in typing.get_args(annotation)):
            return strict_int(value)
        return value

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, value: list[str]) -> list[str]:
        for topic in value:
            if topic in (".", "..") or not _TOPIC_RE.match(topic):
                raise ValueError(
                    f"{topic!r} is not a valid Kafka topic name (1-249 characters of a-z A-Z 0-9 . _ -)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a topic is listed twice")
        return value

    @field_validator("key_deserializer", "value_deserializer", mode="before")
    @classmethod
    def _deserializer_kind(cls, value: Any) -> Any:
        if value is None or isinstance(value, str) or callable(value):
            return value
        raise ValueError(f"{type(value).__name__} is not a deserializer: pass a callable deserializer(data, ctx) "
                         "(e.g. confluent-kafka's AvroDeserializer), 'module:attr' naming one, or None for bytes")

    @field_validator("key_deserializer", "value_deserializer")
    @classmethod
    def _check_deserializer(cls, value: Deserializer | str | None, info: ValidationInfo) -> Deserializer | str | None:
        """A reference must import (here, so a typo fails at construction) and name a callable; a class is refused
        (it would be called with each record's bytes and return an instance of itself)."""
        if isinstance(value, str):
            reference_of(value, str(info.field_name), "'module:attr'")
            try:
                resolved = resolve(value)
            except Exception as exc:  # whatever importing the user's module raises is this field's error
                raise ValueError(f"{value!r} cannot be imported: {type(exc).__name__}: {exc}") from exc
            if isinstance(resolved, type):
                raise ValueError(f"{value!r} names the class {resolved.__name__}; name an instance of it")
        elif isinstance(value, type):
            raise ValueError(f"{value.__name__} is a class; pass an instance, e.g. {value.__name__}(...)")
        return value

    @field_validator("control_token")
    @classmethod
    def _check_control_token(cls, value: SecretStr | None) -> SecretStr | None:
        problem = token_problem(value.get_secret_value()) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("dlq_topic")
    @classmethod
    def _check_dlq_topic(cls, value: str | None) -> str | None:
        if value is not None and (value in (".", "..") or not _TOPIC_RE.match(value)):
            raise ValueError(f"{value!r} is not a valid Kafka topic name")
        return value

    @field_validator("tracing_enabled")
    @classmethod
    def _check_tracing(cls, value: bool) -> bool:
        if value and not _tracing_api_installed():
            raise ValueError("tracing needs opentelemetry-api, which is not installed: pip install "
                             "'pyrallel-consumer[tracing]'")
        return value

    @field_validator("kafka")
    @classmethod
    def _check_kafka(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.data.get("group_type") == "share":
            return _checked_share_properties(value)
        for name, setting in value.items():
            if name in OWNED_KAFKA_PROPERTIES:
                raise ValueError(f"'{name}' is set by the library: {OWNED_KAFKA_PROPERTIES[name]}")
            allowed = _ENUM_PROPERTIES.get(name)
            if allowed and str(setting).lower() not in allowed:
                raise ValueError(f"'{name}' must be one of {', '.join(allowed)}, not {setting!r}")
        protocol = info.data.get("group_protocol", "classic")
        if protocol == "consumer":
            for name in ("session.timeout.ms", "heartbeat.interval.ms"):
                if name in value:
                    raise ValueError(f"'{name}' is set by the broker under group_protocol=consumer")
        if value:  # the library's own settings too: librdkafka refuses some combinations with them
            conf: dict[str, Any] = {"group.id": "pyrallel-config-check", "group.protocol": protocol,
                                    "enable.auto.commit": False, "enable.auto.offset.store": False}
            if protocol == "classic":
                conf["partition.assignment.strategy"] = "cooperative-sticky"
            if info.data.get("group_instance_id"):
                conf["group.instance.id"] = info.data["group_instance_id"]
            reason = librdkafka_refusal("consumer", {**conf, **value})
            if reason is not None:
                raise ValueError(describe_refusal(value, reason))
        return value

    @field_validator("dlq_kafka")
    @classmethod
    def _check_dlq_kafka(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_producer_properties(
            value, DLQ_OWNED_PROPERTIES, {"enable.idempotence": True, "acks": "all"},
            "a record's offset is committed only once the broker acknowledged its dead-letter copy (acks=all, "
            "idempotent producer)")

    @field_validator("output_kafka")
    @classmethod
    def _check_output_kafka(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_producer_properties(
            value, OUTPUT_OWNED_PROPERTIES, {"transactional.id": "pyrallel-config-check"},
            "outputs and offsets are committed in one transaction (transactional_id, transaction_timeout_ms, "
            "bootstrap_servers)")

    def _check_exactly_once(self) -> None:
        """The settings that only make sense with exactly_once, and those that contradict it."""
        if self.processing_guarantee != "exactly_once":
            for name in ("transactional_id", "output_kafka"):
                if getattr(self, name):
                    raise ValueError(f"{name} applies only to processing_guarantee='exactly_once'")
            return
        isolation = self.kafka.get("isolation.level", "read_committed").lower()
        if isolation != "read_committed":
            raise ValueError("processing_guarantee='exactly_once' reads with isolation.level=read_committed (so "
                             "outputs of aborted transactions upstream are never handled); remove "
                             f"isolation.level={isolation} from kafka")
        if self.dlq_kafka:
            raise ValueError("dlq_kafka does not apply to processing_guarantee='exactly_once': dead-letter copies go "
                             "through the transactional producer, in the transaction of the record's offset "
                             "(configure it with output_kafka)")
        if self.transaction_timeout_ms <= self.commit_interval_ms:
            raise ValueError(f"transaction_timeout_ms ({self.transaction_timeout_ms}) must be larger than "
                             f"commit_interval_ms ({self.commit_interval_ms}): a transaction stays open about "
                             "commit_interval_ms, and the broker would abort every one")

    def _check_deserializers_reach_workers(self) -> None:
        """engine=process: each worker imports its own deserializers by name, so an object must have one."""
        if self.engine != "process":
            return
        for name in ("key_deserializer", "value_deserializer"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                reference_of(value, name, "a top-level function or 'module:attr' naming a module-level deserializer")
            except ValueError as exc:
                raise ValueError(f"{name}: engine='process' imports it by name in each worker process (a deserializer "
                                 "object cannot be copied into another process: a schema-registry one holds an HTTP "
                                 f"client), and {exc}") from None

    def _check_share_group(self) -> None:
        """group_type='share': the broker hands a partition's records to many members, so no order exists to keep,
        and acknowledgements are not part of a transaction."""
        if self.group_type != "share":
            return
        if self.ordering != Ordering.UNORDERED:
            raise ValueError(f"group_type='share' gives no order (the broker hands the records of one partition to "
                             f"many consumers and redelivers released ones later), so ordering={self.ordering.value!r} "
                             "cannot be kept: set ordering='unordered'")
        if self.processing_guarantee == "exactly_once":
            raise ValueError("group_type='share' acknowledges records one by one, outside any transaction: "
                             "processing_guarantee='exactly_once' is not available; use at_least_once")
        if self.pause_mode == "hold":
            raise ValueError("group_type='share' pauses by leaving the group (a member that stops polling keeps the "
                             "records of the partitions assigned to it from the others): pause_mode='hold' is not "
                             "available; use 'release'")

    @model_validator(mode="after")
    def _check_combinations(self) -> ConsumerConfig:
        self._check_exactly_once()
        self._check_share_group()
        self._check_deserializers_reach_workers()
        if self.commit_min_interval_ms > self.commit_interval_ms:
            raise ValueError(f"commit_min_interval_ms ({self.commit_min_interval_ms}) must be at most "
                             f"commit_interval_ms ({self.commit_interval_ms})")
        if self.max_retry_backoff_ms < self.retry_backoff_ms:
            raise ValueError("max_retry_backoff_ms must be >= retry_backoff_ms")
        if self.dlq_topic is not None and self.dlq_topic in self.topics:
            raise ValueError(f"dlq_topic {self.dlq_topic!r} is a consumed topic: failed records would come back "
                             "for ever")
        if (self.control_port is not None and self.control_token is None and not self.control_insecure
                and not is_loopback_host(self.control_host)):
            raise ValueError(f"control_host {self.control_host!r} is not a loopback address and control_token is "
                             "not set: anyone who can reach the port could pause the consumer; set control_token, "
                             "or control_insecure=True to serve without authentication")
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in ("kafka", "dlq_kafka", "output_kafka") and isinstance(value, dict):
                yield name, {k: ("***" if is_secret_property(k) else v) for k, v in value.items()}
            else:
                yield name, value


def strict_int(value: Any) -> Any:
    """An int field's input as an int: ints (never bools), and decimal digits as an env var gives them.

    pydantic's lax mode would take True as 1, 100.0 as 100 and "100.0" as 100; a config that says
    max_in_flight=True is a mistake, not a request for one record at a time. None passes (optional fields).
    Called by ConsumerConfig's validation, on the constructing thread.
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and _DECIMAL_RE.fullmatch(value.strip()):
        return int(value.strip())
    if not isinstance(value, (bool, str, float)):
        try:
            return operator.index(value)  # e.g. a numpy integer
        except TypeError:
            pass
    raise ValueError("must be a whole number: an int, or decimal digits in an environment variable")


def _tracing_api_installed() -> bool:
    """Whether opentelemetry-api can be imported, found without importing it (ConsumerConfig's validation)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:  # not even the opentelemetry namespace package
        return False


def _warn_unknown_environment(fields: Iterable[str]) -> None:
    """Log one WARNING naming every ``PYRALLEL_*`` env var that is neither a field nor the tooling's.

    pydantic-settings ignores them silently, so a misspelt PYRALLEL_MAX_INFLIGHT would leave the default in
    force unnoticed. Called at every ConsumerConfig construction, before validation (a misspelt required
    field then shows next to the 'Field required' error).
    """
    known = {f"PYRALLEL_{name.upper()}" for name in fields}
    unknown = sorted(name for name in os.environ
                     if name.upper().startswith("PYRALLEL_") and name.upper() not in known | TOOLING_VARIABLES)
    if not unknown:
        return
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
        described.append(f"{name} (did you mean {close[0]}?)" if close else name)
    log.warning("Ignoring environment variable(s) that name no ConsumerConfig field: %s", ", ".join(described))


def _describe(exc: ValidationError) -> str:
    """One line per bad field: 'field: problem (got value)'; secrets are never echoed."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        echo = err["loc"] and err["type"] != "missing" and "kafka" not in loc and "token" not in loc
        shown = f" (got {err.get('input')!r})" if echo else ""
        lines.append(f"{loc}: {msg}{shown}")
    return "Invalid ConsumerConfig: " + "; ".join(lines)


def _checked_share_properties(value: dict[str, str]) -> dict[str, str]:
    """``kafka`` of a share group: none of SHARE_OWNED_KAFKA_PROPERTIES, and accepted by librdkafka's share consumer
    (which refuses the consumer-group properties, e.g. auto.offset.reset or session.timeout.ms)."""
    for name in value:
        if name in SHARE_OWNED_KAFKA_PROPERTIES:
            raise ValueError(f"'{name}' is set by the library for share groups: {SHARE_OWNED_KAFKA_PROPERTIES[name]}")
    if value:
        reason = librdkafka_refusal("share_consumer", {"group.id": "pyrallel-config-check",
                                                       "share.acknowledgement.mode": "explicit", **value})
        if reason is not None:
            raise ValueError(describe_refusal(value, reason))
    return value


def _checked_producer_properties(value: dict[str, str], owned: Collection[str], base: dict[str, Any],
                                 why: str) -> dict[str, str]:
    """librdkafka properties of one of the library's producers: none of ``owned`` (the library sets them, ``why``),
    and accepted by librdkafka on top of ``base``."""
    for name in value:
        if name in owned:
            raise ValueError(f"'{name}' is set by the library: {why}")
    if value:
        reason = librdkafka_refusal("producer", {**base, **value})
        if reason is not None:
            raise ValueError(describe_refusal(value, reason))
    return value
