"""JSON log lines of a real consumer carry the stable event keys that the LogQL queries in docs/operations.md use.

Two colors of one group on the real broker, logging as JSON (``configure_logging("json")``) to a captured stream:
blue starts ACTIVE, green joins held PAUSED (its assignment says so), blue is paused and resumed over its control
server, then both stop. Every event line is checked against ``observability.log_events.EVENTS``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.support import wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.observability.log_events import EVENT, EVENTS
from pyrallel_consumer.observability.logging import configure_logging
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

STANDARD_KEYS = {"ts", "level", "logger", "message"}


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    """The root logger writes JSON lines to a StringIO; restored afterwards (configure_logging is process-wide)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("json", logging.INFO, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _config(bootstrap: str, group: str, topic: str, color: str, **extra: object) -> ConsumerConfig:
    """No asynchronous commit during the test (neither periodic nor after completions): the revocation, the pause
    and the stop commit synchronously."""
    return ConsumerConfig(bootstrap_servers=bootstrap, group_id=group, topics=[topic], color=color,
                          instance_id=f"{color}-1", commit_interval_ms=600_000, commit_min_interval_ms=600_000,
                          pause_mode="hold", control_port=0, **extra)


async def test_a_consumers_json_lines_carry_the_lifecycle_partition_and_commit_events(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    json_stream: io.StringIO,
) -> None:
    topic, group = new_topic(2), unique_name("g")
    handled: list[int] = []

    async def handle(record: Record) -> None:
        handled.append(record.offset)

    blue = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "blue"), handle)
    green = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "green", start_paused=True), handle)
    async with blue:
        await wait_for(lambda: len(blue.lifecycle.status()["assigned_partitions"]) == 2, what="blue owns both")
        produce_keyed(kafka_bootstrap, topic, 50, keys=10)
        await wait_for(lambda: len(handled) == 50, what="blue handles the records")
        async with green:
            await wait_for(lambda: len(green.lifecycle.status()["assigned_partitions"]) == 1, what="split 1/1")
        assert blue.control_server is not None
        url = blue.control_server.url
        status, body = await asyncio.to_thread(_post, f"{url}/lifecycle/pause?generation=1&wait=30")
        assert (status, body["state"]) == (200, "PAUSED")
        status, body = await asyncio.to_thread(_post, f"{url}/lifecycle/resume?generation=1&wait=30")
        assert (status, body["state"]) == (200, "ACTIVE")
        produce_keyed(kafka_bootstrap, topic, 20, keys=10, start_seq=50)
        await wait_for(lambda: len(handled) == 70, what="blue handles the second batch")

    entries = [json.loads(line) for line in json_stream.getvalue().splitlines()]
    for entry in entries:
        assert set(entry) >= STANDARD_KEYS, entry
    lines = [e for e in entries if EVENT in e and e["logger"].startswith("pyrallel_consumer")]
    for entry in lines:
        spec = EVENTS[entry[EVENT]]
        assert set(entry) - {"exc_info"} == STANDARD_KEYS | {EVENT, *spec.fields}, entry

    def of(event: str, color: str) -> list[dict[str, Any]]:
        return [e for e in lines if e[EVENT] == event and e.get("color") == color]

    [started] = of("consumer_started", "blue")
    assert (started["group_id"], started["state"], started["instance"]) == (group, "ACTIVE", "blue-1")
    assert of("consumer_started", "green")[0]["state"] == "PAUSED"

    transitions = [(e["from_state"], e["to_state"], e["cause"]) for e in of("lifecycle_transition", "blue")]
    assert transitions == [
        ("STARTING", "ACTIVE", "started"),
        ("ACTIVE", "DRAINING", "pause over HTTP"),
        ("DRAINING", "PAUSED", "pause over HTTP"),
        ("PAUSED", "ACTIVE", "resume over HTTP"),
        ("ACTIVE", "STOPPED", "stop"),
    ]
    transitions_of_blue = of("lifecycle_transition", "blue")
    assert {e["generation"] for e in transitions_of_blue[1:]} == {1}
    assert of("lifecycle_transition", "green")[0]["to_state"] == "PAUSED"

    pause, resume = of("lifecycle_command", "blue")
    assert (pause["command"], pause["status"], pause["state"], pause["requested_generation"]) == (
        "pause", 200, "PAUSED", 1)
    assert (resume["command"], resume["status"], resume["state"]) == ("resume", 200, "ACTIVE")
    assert all(isinstance(e["seconds"], float) and 0 <= e["seconds"] < 30 for e in (pause, resume))

    blue_assigned = of("partitions_assigned", "blue")
    assert blue_assigned[0]["partition_count"] == 2 and blue_assigned[0]["paused"] is False
    [green_assigned] = [e for e in of("partitions_assigned", "green") if e["partition_count"]]
    assert green_assigned["paused"] is True, "a PAUSED consumer's new partitions stay paused"
    assert green_assigned["partitions"] in (f"{topic}[0]", f"{topic}[1]")
    assert of("partitions_revoked", "blue"), "blue gave a partition to green"

    commits = of("offsets_committed", "blue")
    assert commits and {e["mode"] for e in commits} == {"sync"}, "periodic async commits are DEBUG: not at INFO"
    assert all(e["level"] == "INFO" and e["partition_count"] >= 1 and "@" in e["partitions"] for e in commits)
    assert any(f"{topic}[" in e["partitions"] for e in commits)

    [stopped] = of("consumer_stopped", "blue")
    assert stopped["drained"] is True
    at = {id(e): i for i, e in enumerate(lines)}
    assert any(at[id(green_assigned)] > at[id(e)] > at[id(of("partitions_revoked", "blue")[0])] for e in commits), (
        "the revocation's synchronous commit")
    assert any(at[id(pause)] > at[id(e)] > at[id(transitions_of_blue[1])] for e in commits), "the pause's commit"
    assert any(at[id(stopped)] > at[id(e)] > at[id(resume)] for e in commits), "the stop's commit"
