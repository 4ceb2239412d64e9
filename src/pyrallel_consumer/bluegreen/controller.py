"""Switch controller: moves processing from one color to the other by strategy B, C or E, timed step by step.

Order is always "stop the old color first, start the new one second", so the two colors never process
at once; a failed step, or a new color that fails its health check, rolls back to the previous color.
Every write of the active color goes through the fenced control topic (``active_color``), and every
lifecycle command carries the new generation, so a command from a fenced-off controller is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry, Histogram

from pyrallel_consumer import LibrdkafkaLog
from pyrallel_consumer.bluegreen.active_color import (
    CONTROL_LOGGER,
    CONTROL_TOPIC,
    ActiveColor,
    ActiveColorWriter,
    read_active_color,
)

log = logging.getLogger(__name__)

COLORS = ("blue", "green")
STRATEGIES = ("B", "C", "E")


class SwitchError(RuntimeError):
    """A switch step failed; the message names the step."""


class UnreachableError(SwitchError):
    """No HTTP answer at all (connection refused, timeout): the instance may be restarting."""


def other_color(color: str) -> str:
    if color not in COLORS:
        raise ValueError(f"color must be blue or green, not {color!r}")
    return COLORS[1 - COLORS.index(color)]


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout_s: float = 60.0) -> Any:
    """One JSON request; raises SwitchError with the status and body on any non-2xx answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback URLs we were given
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise SwitchError(f"{method} {url}: HTTP {exc.code} {exc.read().decode(errors='replace')[:300]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise UnreachableError(f"{method} {url}: {exc}") from exc
    return json.loads(payload) if payload else None


@dataclass(slots=True)
class Step:
    name: str
    started_at: float
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class SwitchResult:
    strategy: str
    action: str
    from_color: str
    to_color: str
    generation: int
    started_at: float
    seconds: float = 0.0
    ok: bool = False
    rolled_back: bool = False
    error: str | None = None
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The new color is healthy when its error rate stays under ``max_error_rate`` for ``window_s``."""

    window_s: float = 5.0
    max_error_rate: float = 0.2
    ready_timeout_s: float = 30.0


@dataclass(slots=True)
class Deployment:
    """What the controller drives: per color, the control URLs of its consumer instances (and, for B, groups)."""

    name: str
    bootstrap: str
    instances: dict[str, list[str]]
    groups: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    connect_url: str | None = None
    connectors: dict[str, str] = field(default_factory=dict)
    """Strategy E: connector name per color (default: the color itself)."""
    kafka: dict[str, str] = field(default_factory=dict)
    """librdkafka properties of the controller's own Kafka clients (the active-color writer and reader, the admin
    client of strategy B's hand-over): what the cluster asks of every client, e.g. ``security.protocol``,
    ``sasl.mechanism``, ``sasl.username``, ``sasl.password``, ``ssl.ca.location`` - the security settings the
    colors' consumers have in their ``ConsumerConfig.kafka``."""

    connector_state: Callable[[str, str], None] | None = None
    """Strategy E: sets a connector's target state (``"stopped"`` or ``"running"``) where an operator owns it, e.g.
    Strimzi's ``KafkaConnector.spec.state`` (the Kubernetes controller sets it); called before the REST call, which
    the operator would otherwise undo at its next reconciliation. Raises ``SwitchError`` on failure."""

    def connector(self, color: str) -> str:
        return self.connectors.get(color, color)


class SwitchController:
    def __init__(self, deployment: Deployment, controller_id: str, registry: CollectorRegistry | None = None) -> None:
        self.deployment = deployment
        self._writer = ActiveColorWriter(deployment.bootstrap, controller_id, CONTROL_TOPIC, deployment.kafka)
        self.registry = registry or CollectorRegistry()
        self._switch_hist = Histogram("bg_switch_duration_seconds", "Blue/green switch duration", ["strategy"],
                                      registry=self.registry, buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self._rollback_hist = Histogram("bg_rollback_duration_seconds", "Blue/green rollback duration",
                                        ["strategy"], registry=self.registry,
                                        buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.history: list[SwitchResult] = []
        self.on_step: Callable[[Step], None] | None = None
        """Called with each step as it ends (on the switching thread), e.g. to log it live; must not raise."""

    # ---- public ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the active-color writer and take this controller's histograms off its registry, so a replacement
        (e.g. for other bootstrap servers) can register its own on the same registry."""
        self._writer.close()
        for collector in (self._switch_hist, self._rollback_hist):
            with contextlib.suppress(KeyError):  # already taken off
                self.registry.unregister(collector)

    def current(self) -> ActiveColor | None:
        try:
            return read_active_color(self.deployment.bootstrap, self.deployment.name, kafka=self.deployment.kafka)
        except KafkaException as exc:
            raise SwitchError(f"cannot read the active color of {self.deployment.name}: {exc}") from exc

    def initialize(self, color: str) -> ActiveColor:
        """The deployment's record, written for ``color`` with generation 1 when there is none yet (a first
        install); an existing record is returned unchanged. Starts no color: whoever keeps the consumers in line
        with the record (the Kubernetes controller) resumes ``color`` with generation 1."""
        if color not in COLORS:
            raise ValueError(f"color must be blue or green, not {color!r}")
        current = self.current()
        if current is not None:
            return current
        try:
            return self._writer.write(self.deployment.name, color, 1)
        except KafkaException as exc:
            raise SwitchError(f"cannot write the first active color of {self.deployment.name}: {exc}") from exc

    def switch(self, strategy: str, to_color: str, health: HealthCheck | None = None,
               action: str = "switch") -> SwitchResult:
        """Make ``to_color`` the only processing color; on failure, roll back to the previous one.

        A controller fenced by a newer one with the same id (``ControllerFencedError``) stops at once and
        rolls nothing back: the newer controller owns the deployment, and its commands carry a newer generation.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        current = self.current()
        from_color = current.color if current else other_color(to_color)
        generation = (current.generation if current else 0) + 1
        result = SwitchResult(strategy, action, from_color, to_color, generation, time.time())
        started = time.monotonic()
        try:
            self._run_strategy(strategy, result, from_color, to_color, generation)
            if health is not None:
                with self._step(result, f"health check {to_color}"):
                    self._check_health(to_color, health)
            result.ok = True
        except SwitchError as exc:
            result.error = str(exc)
            log.error("%s to %s failed: %s; rolling back to %s", action, to_color, exc, from_color)
            self._roll_back(strategy, result, from_color, to_color, generation)
        result.seconds = time.monotonic() - started
        hist = self._rollback_hist if action == "rollback" else self._switch_hist
        hist.labels(strategy).observe(result.seconds)
        self.history.append(result)
        log.info("%s %s -> %s by %s: %s in %.3fs", action, from_color, to_color, strategy,
                 "ok" if result.ok else "rolled back" if result.rolled_back else "FAILED", result.seconds)
        return result

    def rollback(self, strategy: str, health: HealthCheck | None = None) -> SwitchResult:
        """Switch back to the color that was active before the current one."""
        current = self.current()
        if current is None:
            raise SwitchError("no active color recorded: nothing to roll back")
        return self.switch(strategy, other_color(current.color), health, action="rollback")

    # ---- steps -----------------------------------------------------------------------------------------

    @contextmanager
    def _step(self, result: SwitchResult, name: str) -> Iterator[None]:
        began, started = time.time(), time.monotonic()
        try:
            yield
        except (SwitchError, KafkaException, OSError, ValueError) as exc:
            self._record(result, Step(name, began, time.monotonic() - started, False, str(exc)))
            raise SwitchError(f"{name}: {exc}") from exc
        self._record(result, Step(name, began, time.monotonic() - started, True))

    def _record(self, result: SwitchResult, step: Step) -> None:
        result.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def _run_strategy(self, strategy: str, result: SwitchResult, from_color: str, to_color: str,
                      generation: int) -> None:
        """Stop ``from_color``, hand its position over, record ``to_color`` as active, then start it."""
        if strategy == "E":
            self._connect_stop_and_copy(result, self.deployment.connector(from_color),
                                        self.deployment.connector(to_color))
        positions: list[dict[str, Any]] = []
        if strategy != "E":
            with self._step(result, f"pause {from_color}"):
                self._lifecycle_all(from_color, "pause", generation)
            if strategy == "B":
                positions = self._hand_over(result, from_color, to_color)
        with self._step(result, _record_step(to_color)):
            self._writer.write(self.deployment.name, to_color, generation)
        self._start(strategy, result, to_color, generation, positions=positions)

    def _hand_over(self, result: SwitchResult, from_color: str, to_color: str,
                   prefix: str = "") -> list[dict[str, Any]]:
        """Strategy B: the old color's committed offsets, for the new color to start from.

        Offsets can be written into a group from outside only while it has no members. A new color whose
        instances stay in their group while paused (``pause_mode="hold"``, the fast way: no join, no rebalance
        round) gets them in a step of their own before its resume, and each instance commits them into its group itself
        (see ``pyrallel_consumer.control.positions``): they are returned then. Instances that left their group
        when paused (``"release"``) get them written into the group, once it is empty, and ``[]`` is returned.
        """
        source, target = self.deployment.groups[from_color], self.deployment.groups[to_color]
        with self._step(result, f"{prefix}hand over offsets {from_color} -> {to_color}"):
            holding = all(_status(url, self.deployment.token).get("pause_mode") == "hold"
                          for url in self.deployment.instances[to_color])
            return self._group_positions(source, target, write=not holding)

    def _group_positions(self, source: str, target: str, write: bool) -> list[dict[str, Any]]:
        """``source``'s committed offsets as positions for ``target``'s members, or (``write``) written into
        ``target`` once it is empty (then ``[]``).

        A partition on which ``target`` has committed further than ``source`` keeps ``target``'s own offset (and
        map): the receiver never goes back. In a clean hand-over the source is ahead (the receiver was paused);
        it is behind when the receiver's last take never happened, e.g. a switch whose new color failed to take
        the positions is rolled back, and handing the stale offsets back would rewind the old color.
        """
        conf: dict[str, Any] = {**self.deployment.kafka, "bootstrap.servers": self.deployment.bootstrap,
                                "logger": LibrdkafkaLog(CONTROL_LOGGER)}
        admin = AdminClient(conf)
        offsets = _committed(admin, source)
        if not offsets:
            raise SwitchError(f"group {source} has no committed offsets to hand over")
        own = {(tp.topic, tp.partition): tp for tp in _committed(admin, target)}
        behind = {key for tp in offsets if (mine := own.get(key := (tp.topic, tp.partition))) is not None
                  and mine.offset > tp.offset}
        if behind:
            log.warning("Group %s is behind %s on %d partition(s); those keep %s's own offsets", source, target,
                        len(behind), target)
        offsets = [own[key] if (key := (tp.topic, tp.partition)) in behind else tp for tp in offsets]
        if not write:
            log.info("Handing %d committed offsets of %s to the members of %s", len(offsets), source, target)
            return [{"topic": tp.topic, "partition": tp.partition, "offset": tp.offset, "metadata": tp.metadata}
                    for tp in offsets]
        _wait_group_empty(admin, target)
        copies = [TopicPartition(tp.topic, tp.partition, tp.offset, tp.metadata) for tp in offsets]
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(target, copies)])[
            target].result(timeout=30)
        log.info("Copied %d committed offsets from %s to %s", len(copies), source, target)
        return []

    def _start(self, strategy: str, result: SwitchResult, color: str, generation: int, prefix: str = "",
               positions: list[dict[str, Any]] | None = None) -> None:
        if strategy == "E":
            name = self.deployment.connector(color)
            with self._step(result, f"{prefix}resume connector {name}"):
                if self.deployment.connector_state is not None:
                    self.deployment.connector_state(name, "running")
                http_json("PUT", f"{self.deployment.connect_url}/connectors/{name}/resume")
                _wait_connector(str(self.deployment.connect_url), name, "RUNNING")
        else:
            if positions:  # every instance takes them while still PAUSED; only then does any of them resume
                with self._step(result, f"{prefix}hand positions to {color}"):
                    self._lifecycle_all(color, "positions", generation, body={"positions": positions})
            with self._step(result, f"{prefix}resume {color}"):
                self._lifecycle_all(color, "resume", generation)

    def _roll_back(self, strategy: str, result: SwitchResult, from_color: str, to_color: str,
                   switch_generation: int) -> None:
        """Give processing back to ``from_color`` after a failed switch, undoing only what the switch did.

        Only a switch that recorded the new color went on to start it (some of its instances may run even if
        the start failed): then the new color is stopped, its position copied back (B, E) and the record set
        back. Before that, the new color never ran, and copying its stale offsets back would rewind the old
        color. If the new color cannot be stopped, or the record cannot be set back, the old color stays
        stopped too: a stall an operator sees is better than both colors processing.

        The rollback's commands carry a generation one past the switch's only when it writes the record (with
        that generation) too; otherwise they reuse the switch's. Consumers accept a command no older than the
        last one they saw, and the next switch takes the record's generation plus one: a rollback that moved
        the consumers past the record would have them refuse every later switch as older.
        """
        started_new = any(step.ok and step.name == _record_step(to_color) for step in result.steps)
        generation = switch_generation + 1 if started_new else switch_generation
        positions: list[dict[str, Any]] = []
        try:
            if started_new:
                if strategy == "E":
                    self._connect_stop_and_copy(result, self.deployment.connector(to_color),
                                                self.deployment.connector(from_color), prefix="rollback: ")
                else:
                    with self._step(result, f"rollback: pause {to_color}"):
                        self._lifecycle_all(to_color, "pause", generation)
                    if strategy == "B":
                        positions = self._hand_over(result, to_color, from_color, prefix="rollback: ")
                with self._step(result, f"rollback: {_record_step(from_color)}"):
                    self._writer.write(self.deployment.name, from_color, generation)
            self._start(strategy, result, from_color, generation, prefix="rollback: ", positions=positions)
            result.rolled_back = True
        except SwitchError as exc:
            log.error("Rollback to %s failed: %s", from_color, exc)
            result.error = f"{result.error}; rollback failed: {exc}"

    def _lifecycle_all(self, color: str, command: str, generation: int, wait_s: float = 60.0,
                       body: dict[str, Any] | None = None) -> None:
        urls = self.deployment.instances.get(color, [])
        if not urls:
            raise SwitchError(f"no {color} instances are known")
        want = "ACTIVE" if command == "resume" else "PAUSED"
        query = f"generation={generation}" if command == "positions" else f"wait={wait_s:g}&generation={generation}"

        deadline = time.monotonic() + wait_s

        def call(url: str) -> Any:
            """An instance that does not answer may be restarting: ask again until the deadline."""
            while True:
                try:
                    return http_json("POST", f"{url}/lifecycle/{command}?{query}", body, token=self.deployment.token,
                                     timeout_s=wait_s + 10)
                except UnreachableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            answers = list(pool.map(call, urls))
        wrong = [f"{u}: {a}" for u, a in zip(urls, answers, strict=True) if not a or a.get("state") != want]
        if wrong:
            raise SwitchError(f"not {want}: {'; '.join(wrong)}")

    def _check_health(self, color: str, health: HealthCheck) -> None:
        """Ready in time, then an error rate under the threshold over the window (all instances together)."""
        deadline = time.monotonic() + health.ready_timeout_s
        while not all(_status(u, self.deployment.token).get("state") == "ACTIVE"
                      for u in self.deployment.instances[color]):
            if time.monotonic() > deadline:
                raise SwitchError(f"{color} not ready within {health.ready_timeout_s:g}s")
            time.sleep(0.2)
        before = self._counts(color)
        time.sleep(health.window_s)
        after = self._counts(color)
        ok, failed = after[0] - before[0], after[1] - before[1]
        rate = failed / (ok + failed) if ok + failed else 0.0
        if rate > health.max_error_rate:
            raise SwitchError(f"{color} error rate {rate:.0%} over {health.window_s:g}s "
                              f"(limit {health.max_error_rate:.0%})")

    def _counts(self, color: str) -> tuple[int, int]:
        statuses = [_status(u, self.deployment.token) for u in self.deployment.instances[color]]
        return (sum(int(s.get("records_succeeded", 0)) for s in statuses),
                sum(int(s.get("handler_failures", 0)) for s in statuses))

    # ---- strategy E: Kafka Connect ---------------------------------------------------------------------

    def _connect_stop_and_copy(self, result: SwitchResult, from_name: str, to_name: str, prefix: str = "") -> None:
        """Strategy E: stop ``from_name`` and patch its sink offsets into ``to_name`` (created STOPPED)."""
        url = self.deployment.connect_url
        if not url:
            raise SwitchError("strategy E needs the Kafka Connect REST URL")
        with self._step(result, f"{prefix}stop connector {from_name}"):
            if self.deployment.connector_state is not None:
                self.deployment.connector_state(from_name, "stopped")
            http_json("PUT", f"{url}/connectors/{from_name}/stop")
            _wait_connector(url, from_name, "STOPPED")
        with self._step(result, f"{prefix}read offsets of {from_name}"):
            offsets = http_json("GET", f"{url}/connectors/{from_name}/offsets")
        with self._step(result, f"{prefix}write offsets into {to_name}"):
            _wait_connector(url, to_name, "STOPPED")
            if offsets and offsets.get("offsets"):
                http_json("PATCH", f"{url}/connectors/{to_name}/offsets", offsets)


def _record_step(color: str) -> str:
    """Name of the step that records ``color`` as the active one; a rollback looks for it among the steps."""
    return f"record active color {color}"


def _status(url: str, token: str | None) -> dict[str, Any]:
    answer = http_json("GET", f"{url}/lifecycle/status", token=token, timeout_s=10)
    return answer if isinstance(answer, dict) else {}


def _committed(admin: AdminClient, group: str) -> list[TopicPartition]:
    """The group's committed offsets (with metadata), partitions without one left out."""
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return [tp for tp in future.result(timeout=30).topic_partitions if tp.offset >= 0]


def _wait_group_empty(admin: AdminClient, group: str, timeout_s: float = 60.0) -> None:
    """Offsets may only be written into a group without members; wait for its last members to leave."""
    deadline = time.monotonic() + timeout_s
    while True:
        description = admin.describe_consumer_groups([group])[group].result(timeout=30)
        if not description.members:
            return
        if time.monotonic() > deadline:
            raise SwitchError(f"group {group} still has {len(description.members)} member(s)")
        time.sleep(0.2)


def _wait_connector(url: str, name: str, state: str, timeout_s: float = 60.0) -> None:
    """Poll the status endpoint until the connector and all its tasks report ``state`` (never trust a 202)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = http_json("GET", f"{url}/connectors/{name}/status", timeout_s=10)
        except SwitchError as exc:
            last = str(exc)
        else:
            tasks = last.get("tasks", [])
            reached = last.get("connector", {}).get("state") == state and all(t.get("state") == state for t in tasks)
            if reached and (state != "RUNNING" or tasks):
                return
        time.sleep(0.2)
    raise SwitchError(f"connector {name} did not reach {state} within {timeout_s:g}s (last status: {last})")

