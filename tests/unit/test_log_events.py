"""Stable log event keys: the one list of events and fields, the JSON lines they make, and the call sites."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pyrallel_consumer import ConsumerConfig, Record
from pyrallel_consumer.bluegreen import log_events as controller_events
from pyrallel_consumer.control.exhaustion import LogAndSkip
from pyrallel_consumer.control.lifecycle import LifecycleState, StaleGenerationError
from pyrallel_consumer.control.offset_tracker import PartitionOffsets
from pyrallel_consumer.control_server import HttpServer, Request, add_lifecycle_routes, create_control_server
from pyrallel_consumer.execution.async_engine import AsyncExecutionEngine
from pyrallel_consumer.execution.engine import Completion, RetryPolicy, WorkItem
from pyrallel_consumer.kafka.commits import CommitSender
from pyrallel_consumer.observability import log_events
from pyrallel_consumer.observability.log_events import EVENT, EVENTS, FIELDS, event_extra, partition_list
from pyrallel_consumer.observability.logging import JsonFormatter

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
STANDARD_KEYS = {"ts", "level", "logger", "message"}


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything ``pyrallel_consumer`` logs at DEBUG and above, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pyrallel_consumer")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def events(stream: io.StringIO, event: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in entries if e.get(EVENT) == event]


def check_shape(entry: dict[str, Any]) -> None:
    """The line has the standard keys, ``event``, and exactly the fields its event declares."""
    spec = EVENTS[entry[EVENT]]
    assert set(entry) - {"exc_info"} == STANDARD_KEYS | {EVENT, *spec.fields}, entry


def test_every_event_field_is_declared_and_cannot_clash_with_the_log_record() -> None:
    reserved = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
    assert not (set(FIELDS) | {EVENT}) & (reserved | STANDARD_KEYS)
    for name, spec in EVENTS.items():
        assert re.fullmatch(r"[a-z_]+", name)
        assert set(spec.fields) <= set(FIELDS), name
        assert getattr(log_events, name.upper()) == name, "each event has its constant"
    used = {f for spec in EVENTS.values() for f in spec.fields}
    assert used == set(FIELDS), "a field no event uses"


def test_a_json_line_carries_the_event_and_its_fields(json_lines: io.StringIO) -> None:
    log = logging.getLogger("pyrallel_consumer.test_log_events")
    log.info("Lifecycle %s -> %s", "ACTIVE", "DRAINING",
             extra=event_extra(log_events.LIFECYCLE_TRANSITION, from_state="ACTIVE", to_state="DRAINING",
                               cause="pause over HTTP", generation=3, color="blue", instance="blue-1"))
    [entry] = events(json_lines, "lifecycle_transition")
    check_shape(entry)
    assert entry["message"] == "Lifecycle ACTIVE -> DRAINING"
    assert (entry["from_state"], entry["to_state"], entry["generation"], entry["color"]) == (
        "ACTIVE", "DRAINING", 3, "blue")


def test_partition_lists_are_one_string_not_an_array() -> None:
    """Loki's json parser skips arrays."""
    assert partition_list([("orders", 0), ("orders", 3)]) == "orders[0], orders[3]"
    assert partition_list([("orders", 0), ("orders", 3)], [15, 20]) == "orders[0]@15, orders[3]@20"
    assert partition_list([]) == ""


def test_the_operations_guide_documents_every_event_and_field() -> None:
    text = DOCS.read_text()
    section = text[text.index("## Logs and LogQL"):]
    for name, spec in EVENTS.items():
        row = next((line for line in section.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{name} is missing from the events table of docs/operations.md"
        for field in spec.fields:
            assert f"`{field}`" in row, f"{name}: field {field} is missing from its row"


def _table_rows(section: str) -> dict[str, str]:
    """First-column event name -> its row, for the rows of a markdown table that name one event."""
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z_]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_the_operations_guide_documents_every_controller_event_and_field() -> None:
    """The switch controller's events (``pyrallel_consumer.bluegreen.log_events``) against their own table."""
    text = DOCS.read_text()
    start = text.index("### Switch controller events")
    section = text[start:text.index("\n### ", start + 1)]
    rows = _table_rows(section)
    assert set(rows) == set(controller_events.EVENTS), "the table and EVENTS list different events"
    for name, spec in controller_events.EVENTS.items():
        assert getattr(controller_events, name.upper()) == name, "each event has its constant"
        assert set(spec.fields) <= set(controller_events.FIELDS), name
        assert "deployment" in spec.fields, name
        cells = rows[name].split(" | ")
        assert spec.level.split(" ")[0] in cells[1], f"{name}: level"
        documented = set(re.findall(r"`([a-z_]+)`", cells[2]))
        assert documented == set(spec.fields), f"{name}: fields {documented ^ set(spec.fields)}"
    used = {f for spec in controller_events.EVENTS.values() for f in spec.fields}
    assert used == set(controller_events.FIELDS), "a field no event uses"
    reserved = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
    assert not set(controller_events.FIELDS) & (reserved | STANDARD_KEYS)


# ---- call sites ------------------------------------------------------------------------------------------


class _Lifecycle:
    state = LifecycleState.ACTIVE
    generation = 4
    ready = True

    def request_pause(self, generation: int | None = None, cause: str = "") -> LifecycleState:
        if generation is not None and generation < self.generation:
            raise StaleGenerationError("older")
        return LifecycleState.DRAINING

    def request_resume(self, generation: int | None = None, cause: str = "") -> LifecycleState:
        return LifecycleState.ACTIVE

    async def take_positions(self, positions: Any, generation: int | None = None) -> None:
        return None

    async def wait_for(self, state: LifecycleState, timeout_s: float) -> bool:
        self.state = state
        return True

    def status(self) -> dict[str, Any]:
        return {}


async def test_lifecycle_commands_are_logged_with_status_and_duration(json_lines: io.StringIO) -> None:
    server = HttpServer("127.0.0.1", 0, name="test")
    add_lifecycle_routes(server, _Lifecycle(), color="green", instance="green-2")
    assert (await server.handle(Request("POST", "/lifecycle/pause", {"generation": "5", "wait": "1"}))).status == 200
    assert (await server.handle(Request("POST", "/lifecycle/pause", {"generation": "1"}))).status == 409
    assert (await server.handle(Request("POST", "/lifecycle/resume", {"nope": "1"}))).status == 400
    ok, refused, bad = events(json_lines, "lifecycle_command")
    for entry in (ok, refused, bad):
        check_shape(entry)
        assert (entry["color"], entry["instance"]) == ("green", "green-2")
        assert isinstance(entry["seconds"], float) and entry["seconds"] >= 0
    assert (ok["command"], ok["status"], ok["requested_generation"], ok["state"]) == ("pause", 200, 5, "PAUSED")
    assert (refused["status"], refused["requested_generation"], refused["generation"]) == (409, 1, 4)
    assert (bad["command"], bad["status"], bad["requested_generation"]) == ("resume", 400, None)


async def test_the_control_server_labels_its_lines_with_the_consumers_color_and_instance(
    json_lines: io.StringIO,
) -> None:
    config = ConsumerConfig(bootstrap_servers="x:9092", group_id="g", topics=["t"], control_port=0, color="blue",
                            instance_id="blue-7")
    server = create_control_server(config, _Lifecycle())
    assert (await server.handle(Request("POST", "/lifecycle/resume"))).status == 202
    [entry] = events(json_lines, "lifecycle_command")
    assert (entry["command"], entry["color"], entry["instance"]) == ("resume", "blue", "blue-7")


class _Broker:
    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        return None if asynchronous else offsets


def test_sync_commits_log_at_info_and_async_ones_at_debug(json_lines: io.StringIO) -> None:
    sender = CommitSender({("t", 0): 1}, lambda results: None, labels={"color": "blue", "instance": "b-1"})
    tracker = PartitionOffsets(("t", 0), 1, 0, max_window=100)
    for offset in range(5):
        tracker.receive(offset)
        tracker.complete(offset)
    point = tracker.commit_point()
    assert point is not None
    sender.send(_Broker(), [point], sync=True)
    sender.send(_Broker(), [point], sync=False)
    sender.on_commit(None, [TopicPartition("t", 0, point.offset)])
    sync, asynchronous = events(json_lines, "offsets_committed")
    for entry in (sync, asynchronous):
        check_shape(entry)
        assert (entry["partitions"], entry["partition_count"], entry["color"]) == ("t[0]@5", 1, "blue")
    assert (sync["mode"], sync["level"]) == ("sync", "INFO")
    assert (asynchronous["mode"], asynchronous["level"]) == ("async", "DEBUG")


async def test_handler_failures_carry_the_record_and_the_last_one_the_stack(json_lines: io.StringIO) -> None:
    async def handle(record: Record) -> None:
        raise ValueError(f"bad record {record.offset}")

    completions: list[Completion] = []
    engine = AsyncExecutionEngine(handle, RetryPolicy(max_retries=1, backoff_s=0.001))
    await engine.start(completions.append)
    engine.submit(WorkItem(1, Record("orders", 2, 41, b"k", b"v")))
    await engine.shutdown(drain=True, timeout_s=5)
    first, last = events(json_lines, "handler_failed")
    for entry in (first, last):
        check_shape(entry)
        assert (entry["topic"], entry["partition"], entry["offset"]) == ("orders", 2, 41)
        assert (entry["error_type"], entry["error"]) == ("ValueError", "bad record 41")
    assert (first["attempt"], first["retrying"], first["level"], "exc_info" in first) == (1, True, "DEBUG", False)
    assert (last["attempt"], last["retrying"], last["level"]) == (2, False, "WARNING")
    assert 'raise ValueError(f"bad record {record.offset}")' in last["exc_info"]


async def test_an_exhausted_record_is_logged_with_its_labels(json_lines: io.StringIO) -> None:
    policy = LogAndSkip(color="blue", instance="blue-1")
    await policy(Record("orders", 1, 9, None, b"v"), Completion(1, False, 4, 0.1, "KeyError", "'id'"))
    [entry] = events(json_lines, "record_exhausted")
    check_shape(entry)
    assert entry["level"] == "ERROR"
    assert (entry["offset"], entry["attempts"], entry["outcome"], entry["dlq_topic"], entry["instance"]) == (
        9, 4, "failed", None, "blue-1")
