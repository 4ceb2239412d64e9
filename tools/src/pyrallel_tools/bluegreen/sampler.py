"""The status sampler of a scenario run: every instance's state, handled count and lag, twice a second.

Its daemon thread (``scenario-sampler``) reads the topic's high watermarks and probes each instance's control
server (``/lifecycle/status``), or for strategy E the connector's status and offsets on Kafka Connect, and adds
one :class:`Sample` per instance to the run's :class:`Recorder`. The scenario runner's thread records its
events in the same recorder and paces the scenario on the samples (:meth:`StatusSampler.wait_settled`,
:meth:`StatusSampler.wait_caught_up`, :meth:`Recorder.lag`); samples and events go into the run file, for the
report's plots.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pyrallel_consumer.bluegreen.controller import COLORS, SwitchError, http_json
from pyrallel_tools.bluegreen.processes import Instance
from pyrallel_tools.bluegreen.run_record import Event, Sample
from pyrallel_tools.bluegreen.run_spec import RunSpec, ScenarioError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recorder:
    """Samples and events of one run, collected from the sampler's thread and the scenario itself."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, kind: str, detail: str = "", at: float | None = None) -> None:
        """Record ``kind`` as happening now, or ``at`` (a wall-clock time already past); events stay in time order."""
        event = Event(time.time() if at is None else at, kind, detail)
        with self.lock:
            bisect.insort(self.events, event, key=lambda e: e.t)
        log.info("event %s %s", kind, detail)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def latest(self, color: str) -> list[Sample]:
        with self.lock:
            newest: dict[str, Sample] = {}
            for sample in self.samples:
                if sample.color == color:
                    newest[sample.instance] = sample
            return list(newest.values())

    def lag(self, color: str) -> int | None:
        """The color's lag over its ACTIVE instances as last sampled; None while none is ACTIVE."""
        values = [s.lag for s in self.latest(color) if s.state == "ACTIVE" and s.lag is not None]
        return sum(values) if values else None


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` four times a second; :class:`ScenarioError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.25)


class StatusSampler:
    """Samples the run's instances into the recorder from :meth:`start` until :meth:`stop`."""

    def __init__(self, spec: RunSpec, instances: dict[str, list[Instance]], recorder: Recorder) -> None:
        self.spec = spec
        self.instances = instances
        self.recorder = recorder
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._sample_forever, name="scenario-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def wait_settled(self, color: str, timeout_s: float = 120.0, steady_s: float = 1.0) -> None:
        """Wait until ``color`` is settled, for ``steady_s`` on end: the state a switch is judged from.

        Every instance of the color ACTIVE and handling, lag about 0, every partition assigned and (with at least
        as many partitions as instances) every instance owning one: a group that has not spread its partitions
        yet (one member holding all of them for its first rebalance rounds) is not where a switch starts. With
        strategy B the paused color stays in its own group, which must have spread too, so that the hand-over
        reaches each partition's owner at once. Lag alone is 0 before any partition is assigned, and switching
        then would find nothing committed to hand over.
        """
        limit = self._lag_limit()
        other = COLORS[1 - COLORS.index(color)]
        steady_since: list[float] = []

        def spread(c: str, state: str) -> bool:
            latest = self.recorder.latest(c)
            if self.spec.strategy == "E" or not latest:
                return True  # connectors: no assignment to look at
            owned = [s.assigned or 0 for s in latest if s.state == state]
            if len(owned) != len(self.instances[c]):
                return False
            each = len(owned) > self.spec.options.partitions or all(n > 0 for n in owned)
            return each and sum(owned) == self.spec.options.partitions

        def settled() -> bool:
            latest = [s for s in self.recorder.latest(color) if s.state == "ACTIVE"]
            lag = self.recorder.lag(color)
            now = (sum(s.handled for s in latest) > 0 and lag is not None and lag <= limit
                   and spread(color, "ACTIVE") and (self.spec.strategy != "B" or spread(other, "PAUSED")))
            if not now:
                steady_since.clear()
                return False
            if not steady_since:
                steady_since.append(time.monotonic())
            return time.monotonic() - steady_since[0] >= steady_s

        wait_for(settled, timeout_s, f"{color} settled (every partition owned, every instance owning one, lag ~0)")

    def wait_caught_up(self, color: str, timeout_s: float = 90.0) -> None:
        """Lag of the active color at most :meth:`_lag_limit` (the producer keeps going)."""
        limit = self._lag_limit()
        wait_for(lambda: (lag := self.recorder.lag(color)) is not None and lag <= limit, timeout_s,
                 f"{color} lag ~0")

    def _lag_limit(self) -> int:
        """The lag that counts as "about 0": half a second of production, as the consumers commit every 200 ms;
        for connectors 1.5 s, since the Connect worker commits their offsets once a second (the sampled lag of a
        healthy sink saws up to a second of production)."""
        seconds = 1.5 if self.spec.strategy == "E" else 0.5
        return max(10, int(self.spec.options.rate * seconds))

    def _sample_forever(self) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": self.spec.options.bootstrap,
                                "group.id": f"sampler-{self.spec.run_id}"}
        watermarks = Consumer(conf)
        last_handled: dict[str, int] = {}
        try:
            while not self._stopping.is_set():
                highs = {p: watermarks.get_watermark_offsets(TopicPartition(self.spec.topic, p), timeout=5)[1]
                         for p in range(self.spec.options.partitions)}
                now = time.time()
                for color in COLORS:
                    for instance in self.instances[color]:
                        probe = self._probe(instance, highs)
                        if probe["handled"] is None:  # down: its count stays where it was last seen
                            probe["handled"] = last_handled.get(instance.name, 0)
                        last_handled[instance.name] = probe["handled"]
                        self.recorder.add(Sample(t=now, color=color, instance=instance.name, **probe))
                self._stopping.wait(0.5)
        finally:
            watermarks.close()

    def _probe(self, instance: Instance, highs: dict[int, int]) -> dict[str, Any]:
        if self.spec.strategy == "E":
            return self._probe_connector(instance, highs)
        try:
            status = http_json("GET", f"{instance.url}/lifecycle/status", timeout_s=2)
        except SwitchError:
            return {"state": "DOWN", "lag": None, "handled": None, "rebalances": None}
        committed = status.get("committed_offsets", {})
        lag = 0
        for name in status.get("assigned_partitions", []):
            partition = int(name.rsplit("[", 1)[1].rstrip("]"))
            offset = committed.get(name)
            lag += max(0, highs.get(partition, 0) - (offset if offset is not None else 0))
        rebalances = status.get("rebalances", {})
        return {"state": status.get("state"), "lag": lag, "handled": status.get("records_succeeded"),
                "rebalances": sum(rebalances.values()) if isinstance(rebalances, dict) else None,
                "assigned": len(status.get("assigned_partitions", []))}

    def _probe_connector(self, instance: Instance, highs: dict[int, int]) -> dict[str, Any]:
        url = self.spec.options.connect_url
        try:
            status = http_json("GET", f"{url}/connectors/{instance.name}/status", timeout_s=2)
            offsets = http_json("GET", f"{url}/connectors/{instance.name}/offsets", timeout_s=2)
        except SwitchError:
            return {"state": "DOWN", "lag": None, "handled": None}
        state = {"RUNNING": "ACTIVE", "STOPPED": "PAUSED", "PAUSED": "PAUSED"}.get(
            status.get("connector", {}).get("state"), "DOWN")
        done = {int(o["partition"]["kafka_partition"]): int(o["offset"]["kafka_offset"])
                for o in offsets.get("offsets", [])}
        lag = sum(max(0, high - done.get(p, 0)) for p, high in highs.items()) if state == "ACTIVE" else 0
        handled = sum(1 for _ in instance.log_path.open()) if instance.log_path.exists() else 0
        return {"state": state, "lag": lag, "handled": handled}
