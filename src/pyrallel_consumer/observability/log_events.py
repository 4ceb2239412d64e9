"""Stable machine keys of the library's important log lines: an ``event`` name per kind of line, and its fields.

A call site keeps its human message and %-style arguments and adds the keys with ``extra=``::

    log.info("Lifecycle %s -> %s (%s)", old, new, cause,
             extra=event_extra(LIFECYCLE_TRANSITION, from_state=old, to_state=new, cause=cause, ...))

Text logs show the message only; ``JsonFormatter`` (``observability.logging``) writes every key as a top-level JSON
field, so a log pipeline can select lines with ``| json | event="lifecycle_transition"`` instead of matching
message text. Event and field names are an interface (dashboards and LogQL queries use them): rename none, add new
ones. ``EVENTS`` below is the one list of them; docs/operations.md ("Logs and LogQL") documents it, and a unit test
checks that the two agree.

Lists of partitions are one string (``orders[0], orders[3]``) and never a JSON array: Loki's ``json`` parser skips
arrays. No field is named after a LogQL keyword (``count``, ``sum``, ``by``, ...), which a label filter cannot
name; ``offset`` is one, kept because it is Kafka's word: show it with ``line_format``, do not filter on it. ``color``
and ``instance`` are ``ConsumerConfig.color`` and ``instance_id``; lines of the execution engines
(``handler_failed``) do not carry them, as an engine does not know the consumer's config (the pod's labels say which
consumer it is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

EVENT: Final = "event"
"""The key whose value names the kind of line."""

FIELDS: Final[Mapping[str, str]] = {
    "color": "ConsumerConfig.color (null when unset)",
    "instance": "ConsumerConfig.instance_id (default host-pid; the pod name in the Helm chart)",
    "group_id": "the consumer group",
    "topics": "the consumed topics, comma-separated",
    "generation": "the consumer's lifecycle generation after the line's action",
    "requested_generation": "the generation a lifecycle command carried (null when none)",
    "from_state": "lifecycle state before the transition (STARTING, ACTIVE, DRAINING, PAUSED)",
    "to_state": "lifecycle state after the transition (ACTIVE, DRAINING, PAUSED, STOPPED)",
    "state": "lifecycle state: the one a command answered with, or the one the consumer started in",
    "cause": "why the lifecycle changed, e.g. 'pause over HTTP', 'started paused', 'stop'",
    "command": "lifecycle command received over HTTP: pause, resume or positions",
    "status": "HTTP status the control server answered with",
    "seconds": "how long the action took, in seconds (for LogQL's unwrap)",
    "partitions": "partitions as one string: 'orders[0], orders[1]' (with '@offset' for commits)",
    "partition_count": "how many partitions the line is about",
    "position_count": "how many handed-over positions were taken",
    "paused": "whether newly assigned partitions stay paused because the consumer is PAUSED",
    "mode": "offset commit mode: sync (pause, revocation, stop) or async (following completions)",
    "drained": "whether the stop waited for in-flight records",
    "topic": "the record's topic",
    "partition": "the record's partition",
    "offset": "the record's offset",
    "attempt": "the handler attempt that failed (1 = first)",
    "attempts": "handler attempts made before giving up",
    "retrying": "whether the handler will be tried again",
    "error_type": "exception type name of the handler failure",
    "error": "the failure's message",
    "outcome": "what the exhaustion policy did: failed (skipped) or dlq",
    "dlq_topic": "the dead-letter topic written to",
}
"""Every field name an event may carry, with its meaning."""


CONSUMER_STARTED: Final = "consumer_started"
CONSUMER_STOPPED: Final = "consumer_stopped"
LIFECYCLE_TRANSITION: Final = "lifecycle_transition"
LIFECYCLE_COMMAND: Final = "lifecycle_command"
POSITIONS_TAKEN: Final = "positions_taken"
PARTITIONS_ASSIGNED: Final = "partitions_assigned"
PARTITIONS_REVOKED: Final = "partitions_revoked"
PARTITIONS_LOST: Final = "partitions_lost"
OFFSETS_COMMITTED: Final = "offsets_committed"
COMMIT_FAILED: Final = "commit_failed"
COMMIT_REFUSED_IN_REBALANCE: Final = "commit_refused_in_rebalance"
HANDLER_FAILED: Final = "handler_failed"
RECORD_EXHAUSTED: Final = "record_exhausted"


@dataclass(frozen=True, slots=True)
class LogEventSpec:
    """How a line of one event is logged: its level(s), its logger, the fields it carries, what it means.

    Public (``pyrallel_consumer.LogEventSpec``): the event names are a contract with log queries, and the switch
    controller, which may use only the public API, describes its own events with it."""

    level: str
    logger: str
    fields: tuple[str, ...]
    meaning: str


_LABELS = ("color", "instance")

EVENTS: Final[Mapping[str, LogEventSpec]] = {
    CONSUMER_STARTED: LogEventSpec(
        "INFO", "pyrallel_consumer.consumer", ("group_id", "topics", "state", *_LABELS),
        "start() finished: fetching, ACTIVE or PAUSED"),
    CONSUMER_STOPPED: LogEventSpec(
        "INFO", "pyrallel_consumer.control.coordinator", ("group_id", "drained", *_LABELS),
        "stop() finished: final offsets committed, group left"),
    LIFECYCLE_TRANSITION: LogEventSpec(
        "INFO", "pyrallel_consumer.control.lifecycle",
        ("from_state", "to_state", "cause", "generation", *_LABELS),
        "the lifecycle state changed"),
    LIFECYCLE_COMMAND: LogEventSpec(
        "INFO", "pyrallel_consumer.control_server.lifecycle_routes",
        ("command", "requested_generation", "generation", "state", "status", "seconds", *_LABELS),
        "POST /lifecycle/pause|resume|positions answered (any status, 409 and 503 included)"),
    POSITIONS_TAKEN: LogEventSpec(
        "INFO", "pyrallel_consumer.control.lifecycle", ("position_count", "generation", *_LABELS),
        "a PAUSED consumer committed handed-over positions (strategy B)"),
    PARTITIONS_ASSIGNED: LogEventSpec(
        "INFO", "pyrallel_consumer.kafka.poller", ("partitions", "partition_count", "paused", *_LABELS),
        "the group assigned partitions (onPartitionsAssigned); paused=true: they stay paused"),
    PARTITIONS_REVOKED: LogEventSpec(
        "INFO", "pyrallel_consumer.kafka.poller", ("partitions", "partition_count", *_LABELS),
        "the group revokes partitions (onPartitionsRevoked); their offsets are committed next"),
    PARTITIONS_LOST: LogEventSpec(
        "WARNING", "pyrallel_consumer.kafka.poller", ("partitions", "partition_count", *_LABELS),
        "partitions lost without a revocation (session timeout): nothing committed"),
    OFFSETS_COMMITTED: LogEventSpec(
        "INFO (sync) / DEBUG (async)", "pyrallel_consumer.kafka.commits",
        ("mode", "partitions", "partition_count", "seconds", *_LABELS),
        "the broker acknowledged an offset commit"),
    COMMIT_FAILED: LogEventSpec(
        "WARNING", "pyrallel_consumer.control.commit_schedule",
        ("topic", "partition", "offset", "error", *_LABELS),
        "the broker refused or failed an offset commit (not for a rebalance: see commit_refused_in_rebalance)"),
    COMMIT_REFUSED_IN_REBALANCE: LogEventSpec(
        "INFO", "pyrallel_consumer.control.commit_schedule", ("partitions", "partition_count", "error", *_LABELS),
        "the group is rebalancing and refused an asynchronous commit: expected, logged once per rebalance; the first "
        "commit after it covers the progress"),
    HANDLER_FAILED: LogEventSpec(
        "DEBUG (retrying) / WARNING (last attempt)", "pyrallel_consumer.execution.*",
        ("topic", "partition", "offset", "attempt", "retrying", "error_type", "error"),
        "a handler attempt raised or timed out; the async engine adds the stack as exc_info"),
    RECORD_EXHAUSTED: LogEventSpec(
        "ERROR (skipped) / INFO (dead-lettered)", "pyrallel_consumer.control.exhaustion, .kafka.dead_letter",
        ("topic", "partition", "offset", "attempts", "error_type", "error", "outcome", "dlq_topic", *_LABELS),
        "every attempt failed; the exhaustion policy let the record go (skipped, or written to the DLQ)"),
}
"""Every event the library logs: level, logger, fields (``ts``, ``level``, ``logger``, ``message`` aside)."""


def event_extra(event: str, **fields: object) -> dict[str, object]:
    """The ``extra=`` of a line of ``event``: ``{"event": event, **fields}``."""
    return {EVENT: event, **fields}


def partition_list(partitions: Iterable[tuple[str, int]], offsets: Iterable[int] | None = None) -> str:
    """``orders[0], orders[1]``, or with ``offsets`` ``orders[0]@15, orders[1]@20``: one string for Loki."""
    if offsets is None:
        return ", ".join(f"{t}[{p}]" for t, p in partitions)
    return ", ".join(f"{t}[{p}]@{o}" for (t, p), o in zip(partitions, offsets, strict=True))
