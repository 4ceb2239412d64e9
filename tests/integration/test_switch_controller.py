"""Switch strategies B, C and E on the real broker (and a real Kafka Connect for E): no loss, no dual activity."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from tests.support import committed, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.bluegreen.active_color import ActiveColorWriter, ControllerFencedError, read_active_color
from pyrallel_consumer.bluegreen.controller import Deployment, HealthCheck, SwitchController, http_json
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration


class Handled:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, int]] = []

    def handler(self, color: str, fail: bool = False) -> Callable[[Record], object]:
        async def handle(record: Record) -> None:
            if fail:
                raise RuntimeError("green is broken")
            self.events.append((time.monotonic(), color, seq_of(record.value)))

        return handle

    def seqs(self, color: str | None = None) -> list[int]:
        return [s for _, c, s in self.events if color is None or c == color]


def _consumer(bootstrap: str, group: str, topic: str, color: str, n: int, handled: Handled, paused: bool,
              fail: bool = False, pause_mode: Literal["release", "hold"] = "release") -> PyrallelConsumer:
    config = ConsumerConfig(bootstrap_servers=bootstrap, group_id=group, topics=[topic], color=color,
                            instance_id=f"{color}-{n}", control_port=0, start_paused=paused,
                            commit_interval_ms=100, max_retries=0, pause_mode=pause_mode)
    if fail:
        return PyrallelConsumer(config, handled.handler(color, fail=True), on_exhausted=KeepIncomplete())
    return PyrallelConsumer(config, handled.handler(color))


class KeepIncomplete:
    """Never let a failed record go: it stays uncommitted for whoever processes next."""

    outcome = "failed"

    async def __call__(self, record: Record, completion: object) -> bool:
        return False


@pytest.mark.parametrize("strategy", ["C", "B"])
async def test_switch_and_roll_back_without_loss_or_dual_activity(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], strategy: str
) -> None:
    topic = new_topic(4)
    groups = {c: unique_name(f"g-{c}") for c in ("blue", "green")} if strategy == "B" else None
    shared = unique_name("g")
    handled = Handled()
    consumers = {
        color: [_consumer(kafka_bootstrap, groups[color] if groups else shared, topic, color, n, handled,
                          paused=(color == "green")) for n in range(2)]
        for color in ("blue", "green")
    }
    for member in consumers["blue"] + consumers["green"]:
        await member.start()
    try:
        deployment = Deployment(
            name=unique_name("dep"), bootstrap=kafka_bootstrap,
            instances={c: [m.control_server.url for m in ms if m.control_server] for c, ms in consumers.items()},
            groups=groups or {},
        )
        controller = SwitchController(deployment, controller_id=uuid.uuid4().hex[:8])
        produce_keyed(kafka_bootstrap, topic, 1000, keys=50)
        await wait_for(lambda: len(handled.seqs()) == 1000, what="blue handles the first 1000")
        result = await asyncio.to_thread(controller.switch, strategy, "green")
        assert result.ok, result.error
        assert result.steps[0].name == "pause blue"
        assert read_active_color(kafka_bootstrap, deployment.name).color == "green"  # type: ignore[union-attr]
        produce_keyed(kafka_bootstrap, topic, 1000, keys=50, start_seq=1000)
        await wait_for(lambda: len(handled.seqs()) == 2000, what="green handles the second 1000")
        back = await asyncio.to_thread(controller.rollback, strategy)
        assert back.ok, back.error
        produce_keyed(kafka_bootstrap, topic, 1000, keys=50, start_seq=2000)
        await wait_for(lambda: len(handled.seqs()) == 3000, what="blue again handles the third 1000")
    finally:
        for member in consumers["blue"] + consumers["green"]:
            await member.stop()
    assert sorted(handled.seqs()) == list(range(3000)), "every record exactly once"
    assert all(s < 1000 or s >= 2000 for s in handled.seqs("blue"))
    blue_before = [t for t, c, s in handled.events if c == "blue" and s < 1000]
    green = [t for t, c, _ in handled.events if c == "green"]
    blue_after = [t for t, c, s in handled.events if c == "blue" and s >= 2000]
    assert max(blue_before) < min(green) <= max(green) < min(blue_after), "the colors never overlapped"
    assert controller.registry.get_sample_value("bg_switch_duration_seconds_count", {"strategy": strategy}) == 1


def _membership(members: list[PyrallelConsumer]) -> list[tuple[list[str], dict[str, int]]]:
    """Each member's assigned partitions and rebalance counters: what moves when a member leaves or joins."""
    return [(sorted(status["assigned_partitions"]), dict(status["rebalances"]))
            for status in (m.lifecycle.status() for m in members)]


def _spread(members: list[PyrallelConsumer], partitions: int) -> bool:
    """Every member owns a partition and each partition has one owner among them."""
    owned = [set(m.lifecycle.status()["assigned_partitions"]) for m in members]
    return all(owned) and len(set().union(*owned)) == sum(len(o) for o in owned) == partitions


async def test_strategy_b_hands_positions_to_a_color_that_stays_in_its_group(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    """pause_mode=hold: both colors stay joined in their own groups; the switch and the rollback hand the paused
    color the active one's committed offsets with its resume. Nothing lost, nothing handled twice or by both
    colors, no member leaves its group, and each group's commits go on from where the other color's stopped."""
    partitions = 4
    topic = new_topic(partitions)
    groups = {c: unique_name(f"g-{c}") for c in ("blue", "green")}
    handled = Handled()
    consumers = {color: [_consumer(kafka_bootstrap, groups[color], topic, color, n, handled,
                                   paused=(color == "green"), pause_mode="hold") for n in range(2)]
                 for color in ("blue", "green")}
    produced = 0

    async def produce(count: int) -> None:
        nonlocal produced
        start, produced = produced, produced + count
        acked = await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, count, 50, 64, start)
        assert acked == count, f"the producer's delivery reports acknowledged {acked} of {count}"

    async def keep_producing() -> None:
        for _ in range(6):  # over the switch (each batch takes a few hundred ms): before, during and after it
            await produce(40)

    def offsets(color: str) -> list[int]:
        return [o for o, _ in committed(kafka_bootstrap, groups[color], topic, partitions)]

    async def switch(controller: SwitchController, to_color: str) -> dict[str, Any]:
        """Switch (or roll back) while producing; what the user sees of the groups around it."""
        from_color = "blue" if to_color == "green" else "green"
        before = {c: _membership(consumers[c]) for c in consumers}
        feeder = asyncio.create_task(keep_producing())
        if to_color == "green":
            result = await asyncio.to_thread(controller.switch, "B", "green")
        else:
            result = await asyncio.to_thread(controller.rollback, "B")
        await feeder
        assert result.ok, result.error
        assert f"hand over offsets {from_color} -> {to_color}" in [s.name for s in result.steps]
        old_offsets = offsets(from_color)  # the old color is paused: its commits stand still from here on
        new_at_resume = offsets(to_color)
        total = produced
        await wait_for(lambda: len(handled.seqs()) >= total, what=f"{to_color} handles everything produced")
        await wait_for(lambda: sum(offsets(to_color)) == total, what=f"{to_color}'s group commits everything")
        return {"before": before, "after": {c: _membership(consumers[c]) for c in consumers},
                "old": old_offsets, "new_at_resume": new_at_resume, "new": offsets(to_color)}

    for member in consumers["blue"] + consumers["green"]:
        await member.start()
    try:
        for color in ("blue", "green"):  # green joined too, paused: it holds its partitions without fetching
            await wait_for(functools.partial(_spread, consumers[color], partitions),
                           what=f"{color}'s members spread over the {partitions} partitions")
        deployment = Deployment(
            name=unique_name("dep"), bootstrap=kafka_bootstrap,
            instances={c: [m.control_server.url for m in ms if m.control_server] for c, ms in consumers.items()},
            groups=groups,
        )
        controller = SwitchController(deployment, controller_id=uuid.uuid4().hex[:8])
        await produce(500)
        await wait_for(lambda: len(handled.seqs()) == 500, what="blue handles the first 500")
        forth = await switch(controller, "green")
        back = await switch(controller, "blue")
        await produce(200)
        await wait_for(lambda: len(handled.seqs()) >= produced, what="blue handles the last 200")
    finally:
        for member in consumers["blue"] + consumers["green"]:
            await member.stop()

    seqs = handled.seqs()
    assert sorted(set(seqs)) == list(range(produced)), "nothing lost (against the producer's acknowledgements)"
    assert len(seqs) == produced, f"{len(seqs) - produced} records handled twice"
    assert set(handled.seqs("blue")) & set(handled.seqs("green")) == set(), "a record handled by both colors"
    assert handled.seqs("green"), "green handled nothing"
    green_times = [t for t, c, _ in handled.events if c == "green"]
    overlap = [s for t, c, s in handled.events if c == "blue" and min(green_times) <= t <= max(green_times)]
    assert overlap == [], "blue handled records while green was active"
    for name, step in (("switch", forth), ("rollback", back)):
        # No member left or joined its group: the same partitions, no rebalance counted, on either color.
        assert step["after"] == step["before"], f"{name}: group membership moved"
        # The new color's group took the old one's positions with its resume, and went on from there.
        assert all(n >= o for n, o in zip(step["new_at_resume"], step["old"], strict=True)), (name, step)
        assert all(n >= o for n, o in zip(step["new"], step["old"], strict=True)), (name, step)
        assert sum(step["new"]) > sum(step["old"]), (name, step)


async def test_unhealthy_green_is_rolled_back_automatically_and_blue_loses_nothing(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(2), unique_name("g")
    handled = Handled()
    blue = _consumer(kafka_bootstrap, group, topic, "blue", 0, handled, paused=False)
    green = _consumer(kafka_bootstrap, group, topic, "green", 0, handled, paused=True, fail=True)
    await blue.start()
    await green.start()
    try:
        urls = {"blue": [blue.control_server.url], "green": [green.control_server.url]}  # type: ignore[union-attr]
        controller = SwitchController(Deployment(unique_name("dep"), kafka_bootstrap, urls), uuid.uuid4().hex[:8])
        produce_keyed(kafka_bootstrap, topic, 200, keys=20)
        await wait_for(lambda: len(handled.seqs()) == 200, what="blue handles the first 200")

        async def keep_producing() -> None:
            for i in range(20):
                # a fresh key per record: green keeps each failed record (and so its key) blocked, and the
                # health window must still see new failures however late it starts
                await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, 20, 400, 64, 200 + 20 * i)
                await asyncio.sleep(0.2)

        feeder = asyncio.create_task(keep_producing())
        result = await asyncio.to_thread(controller.switch, "C", "green", HealthCheck(window_s=2, max_error_rate=0.2))
        await feeder
        assert not result.ok
        assert result.rolled_back
        assert "error rate" in (result.error or "")
        assert read_active_color(kafka_bootstrap, controller.deployment.name).color == "blue"  # type: ignore[union-attr]
        await wait_for(lambda: len(set(handled.seqs())) == 600, what="blue handles everything after the rollback")
    finally:
        await blue.stop()
        await green.stop()
    assert sorted(set(handled.seqs())) == list(range(600))
    assert handled.seqs("green") == []


def test_second_controller_with_the_same_id_fences_the_first(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    name, controller_id = unique_name("dep"), uuid.uuid4().hex[:8]
    first = ActiveColorWriter(kafka_bootstrap, controller_id)
    first.write(name, "blue", 1)
    second = ActiveColorWriter(kafka_bootstrap, controller_id)
    second.write(name, "green", 2)
    with pytest.raises(ControllerFencedError):
        first.write(name, "blue", 3)
    current = read_active_color(kafka_bootstrap, name)
    assert current is not None
    assert (current.color, current.generation) == ("green", 2)


def test_no_control_topic_yet_reads_as_no_active_color(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Consumers started before any controller ran fall back to --start-paused instead of failing to start."""
    missing = unique_name("control")
    assert read_active_color(kafka_bootstrap, unique_name("dep"), topic=missing, timeout_s=10) is None
    assert missing not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics


def test_strategy_e_moves_the_sink_offsets_between_connectors(
    kafka_bootstrap: str, kafka_connect_url: str, new_topic: Callable[[int], str],
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    topic = new_topic(2)
    names = {c: unique_name(c) for c in ("blue", "green")}
    files = {c: tmp_path / f"{c}.txt" for c in ("blue", "green")}
    for color, initial in (("blue", "RUNNING"), ("green", "STOPPED")):  # green waits, created STOPPED
        http_json("POST", f"{kafka_connect_url}/connectors", {
            "name": names[color], "initial_state": initial,
            "config": {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector", "tasks.max": "1",
                       "topics": topic, "file": str(files[color])},
        })
    try:
        produce_keyed(kafka_bootstrap, topic, 300, keys=30)
        asyncio.run(wait_for(lambda: files["blue"].exists() and len(files["blue"].read_text().splitlines()) == 300,
                             what="blue sink wrote 300 lines"))
        deployment = Deployment(unique_name("dep"), kafka_bootstrap, {}, connect_url=kafka_connect_url,
                                connectors=names)
        controller = SwitchController(deployment, uuid.uuid4().hex[:8])
        result = controller.switch("E", "green")
        assert result.ok, result.error
        assert [s.name for s in result.steps][:2] == [f"stop connector {names['blue']}",
                                                      f"read offsets of {names['blue']}"]
        assert result.seconds < 60, "the plan's target for E"
        produce_keyed(kafka_bootstrap, topic, 300, keys=30, start_seq=300)
        asyncio.run(wait_for(lambda: files["green"].exists() and len(files["green"].read_text().splitlines()) == 300,
                             what="green sink wrote the second 300 lines"))
    finally:
        for name in names.values():
            http_json("DELETE", f"{kafka_connect_url}/connectors/{name}")
    seqs = [json.loads(line)["seq"] if line.startswith("{") else int(line.split("|")[0])
            for color in ("blue", "green") for line in files[color].read_text().splitlines()]
    assert sorted(seqs) == list(range(600))
