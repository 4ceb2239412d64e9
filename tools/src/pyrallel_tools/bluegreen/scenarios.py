"""Scenario runs: a real load producer, real consumer processes per color, a switch, then the validator.

Each run starts from blue processing at lag ~0 with the producer at a fixed rate, acts out one scenario,
stops the producer, lets the active color catch up, stops everything and judges the logs. It samples
every instance twice a second (state, handled count, lag) for the report's plots and writes one JSON file
per run, the input of ``pyrallel report``.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, TopicPartition

from pyrallel_consumer.bluegreen.active_color import ActiveColorWriter, ControllerFencedError
from pyrallel_consumer.bluegreen.controller import (
    COLORS,
    Deployment,
    HealthCheck,
    SwitchController,
    SwitchError,
    SwitchResult,
    http_json,
)
from pyrallel_tools.bluegreen.drain import DrainError, read_pending
from pyrallel_tools.bluegreen.run_record import (
    Criterion,
    Event,
    RunRecord,
    Sample,
    ValidationSummary,
    write_run_record,
)
from pyrallel_tools.bluegreen.validation.findings import ValidationReport
from pyrallel_tools.bluegreen.validation.from_logs import validate_files
from pyrallel_tools.localkafka.cluster import free_port
from pyrallel_tools.localkafka.topics import create_topic

log = logging.getLogger(__name__)

SCENARIOS: dict[int, str] = {
    1: "Normal blue -> green switch, then blue scaled down",
    2: "Switch, then immediate rollback",
    3: "Switch while blue has a lag above 500",
    4: "A consumer process killed and restarted during the switch",
    5: "Green deployed with a high failure rate: automatic rollback",
}
VARIANTS: dict[int, tuple[str | None, ...]] = {1: (None,), 2: (None,), 3: ("wait-for-lag-0", "switch-now"),
                                               4: ("dynamic", "static"), 5: (None,)}
TARGET_SWITCH_S = {"C": 1.0, "B": 30.0, "E": 60.0}
LAGGING_TARGET_SWITCH_S = {"C": 5.0, "B": 30.0, "E": 60.0}
"""Scenario 3 switches while blue's handlers take 1 s each: draining in-flight records bounds the pause, so C
is held to the plan's 5 s there, not to the 1 s of a healthy switch."""
TARGET_ROLLBACK_S = {"C": 1.0, "B": 30.0, "E": 60.0}


class ScenarioError(RuntimeError):
    """A scenario could not be set up or acted out (not a failed verdict: that is a result)."""


@dataclass(slots=True)
class RunOptions:
    bootstrap: str
    connect_url: str | None = None
    out_dir: Path = Path("report/run")
    work_dir: Path = Path("report/work")
    instances: int = 3
    partitions: int = 8
    rate: float = 100.0
    keys: int = 64
    workload: str = "sleep:2ms"
    settle_s: float = 5.0
    """How long the producer keeps going after the switch (and between a switch and its rollback)."""


def _cli() -> list[str]:
    return [sys.executable, "-m", "pyrallel_tools.cli"]


@dataclass(slots=True)
class Instance:
    """One ``pyrallel consume`` process of a color (or, for strategy E, one connector)."""

    color: str
    name: str
    group: str
    port: int
    log_path: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    incarnations: int = 0
    rebalances_before: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, paused: bool) -> None:
        cmd = [*self.args, "--control-port", str(self.port), "--log", str(self.log_path)]
        if paused:
            cmd.append("--start-paused")
        err = self.log_path.with_suffix(".stderr").open("ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        finally:
            err.close()
        self.incarnations += 1

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ScenarioError(f"{self.name} exited with {self.proc.returncode}; see "
                                    f"{self.log_path.with_suffix('.stderr')}")
            try:
                if http_json("GET", f"{self.url}/readyz", timeout_s=2) is not None:
                    return
            except SwitchError:
                pass
            time.sleep(0.2)
        raise ScenarioError(f"{self.name} was not ready within {timeout_s:g}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM: the app stops with a drain and commits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(slots=True)
class Recorder:
    """Samples and events of one run, collected from a background thread and the scenario itself."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.events.append(Event(time.time(), kind, detail))
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


class ScenarioRun:
    """One strategy x scenario (x variant) run."""

    def __init__(self, strategy: str, scenario: int, variant: str | None, options: RunOptions) -> None:
        if strategy not in ("B", "C", "E"):
            raise ScenarioError(f"strategy must be B, C or E, not {strategy!r}")
        if scenario not in SCENARIOS:
            raise ScenarioError(f"scenario must be 1..5, not {scenario!r}")
        if scenario == 4 and strategy != "C":
            raise ScenarioError("scenario 4 is for strategy C only")
        if strategy == "E" and scenario in (3, 5):
            raise ScenarioError("scenarios 3 and 5 need fault injection in the consumer, which a FileStreamSink "
                                "connector does not have; run them with B or C")
        if variant not in VARIANTS[scenario]:
            raise ScenarioError(f"scenario {scenario} variants: {', '.join(str(v) for v in VARIANTS[scenario])}")
        if strategy == "E" and not options.connect_url:
            raise ScenarioError("strategy E needs a Kafka Connect worker (--connect-url)")
        self.strategy, self.scenario, self.variant, self.options = strategy, scenario, variant, options
        self.run_id = f"{strategy}{scenario}{'-' + variant if variant else ''}-{uuid.uuid4().hex[:6]}"
        self.work = options.work_dir / self.run_id
        self.topic = f"bg-{self.run_id}"
        self.deployment_name = f"dep-{self.run_id}"
        self.recorder = Recorder()
        self.instances: dict[str, list[Instance]] = {c: [] for c in COLORS}
        self.switches: list[SwitchResult] = []
        self.conditions: dict[str, Any] = {}
        self._producer: subprocess.Popen[bytes] | None = None
        self._sampling = threading.Event()

    # ---- set-up ----------------------------------------------------------------------------------------

    def _groups(self) -> dict[str, str]:
        if self.strategy == "B":
            return {c: f"grp-{self.run_id}-{c}" for c in COLORS}
        if self.strategy == "E":
            return {c: f"connect-{self.run_id}-{c}" for c in COLORS}
        return dict.fromkeys(COLORS, f"grp-{self.run_id}")

    def _consumer_args(self, color: str, n: int, group: str) -> list[str]:
        args = [*_cli(), "consume", "--bootstrap-servers", self.options.bootstrap, "--topic", self.topic,
                "--group", group, "--color", color, "--instance-id", f"{color}-{n}", "--workload",
                self.options.workload, "--commit-interval-ms", "200", "--until-signal", "--max-retries", "1",
                "--deployment", self.deployment_name, "--on-exhausted", "keep"]
        if self.scenario == 5 and color == "green":
            args += ["--fault-failure-rate", "0.9"]
        if self.scenario == 4:  # a killed member is noticed after the session timeout: keep it short
            args += ["--kafka", "session.timeout.ms=10000"]
        if self.variant == "static":
            args += ["--group-instance-id", f"{self.run_id}-{color}-{n}"]
        return args

    def _start_consumers(self) -> None:
        groups = self._groups()
        for color in COLORS:
            for n in range(1, self.options.instances + 1):
                instance = Instance(color, f"{color}-{n}", groups[color], free_port(),
                                    self.work / f"consumer-{color}-{n}.jsonl", [])
                instance.args = self._consumer_args(color, n, groups[color])
                instance.start(paused=color == "green")
                self.instances[color].append(instance)
        for instance in self.instances["blue"] + self.instances["green"]:
            instance.wait_ready()

    def _start_connectors(self) -> None:
        url = self.options.connect_url
        for color in COLORS:
            name = f"{self.run_id}-{color}"
            sink = self.work / f"sink-{color}.txt"
            http_json("POST", f"{url}/connectors", {
                "name": name, "initial_state": "RUNNING" if color == "blue" else "STOPPED",
                "config": {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                           "tasks.max": "1", "topics": self.topic, "file": str(sink.resolve()),
                           "consumer.override.auto.offset.reset": "earliest"},
            })
            self.instances[color].append(Instance(color, name, f"connect-{name}", 0, sink, []))

    def _start_producer(self, duration_s: float) -> None:
        cmd = [*_cli(), "produce", "--bootstrap-servers", self.options.bootstrap, "--topic", self.topic,
               "--rate", str(self.options.rate), "--keys", str(self.options.keys), "--duration", str(duration_s),
               "--log", str(self.work / "producer.jsonl"), "--seed", "7"]
        err = (self.work / "producer.stderr").open("ab")
        try:
            self._producer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        finally:
            err.close()

    def _stop_producer(self) -> None:
        if self._producer is not None and self._producer.poll() is None:
            self._producer.send_signal(signal.SIGTERM)
            self._producer.wait(60)

    # ---- sampling --------------------------------------------------------------------------------------

    def _sample_forever(self) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": self.options.bootstrap, "group.id": f"sampler-{self.run_id}"}
        watermarks = Consumer(conf)
        last_handled: dict[str, int] = {}
        try:
            while not self._sampling.is_set():
                highs = {p: watermarks.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)[1]
                         for p in range(self.options.partitions)}
                now = time.time()
                for color in COLORS:
                    for instance in self.instances[color]:
                        probe = self._probe(instance, highs)
                        if probe["handled"] is None:  # down: its count stays where it was last seen
                            probe["handled"] = last_handled.get(instance.name, 0)
                        last_handled[instance.name] = probe["handled"]
                        self.recorder.add(Sample(t=now, color=color, instance=instance.name, **probe))
                self._sampling.wait(0.5)
        finally:
            watermarks.close()

    def _probe(self, instance: Instance, highs: dict[int, int]) -> dict[str, Any]:
        if self.strategy == "E":
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
        url = self.options.connect_url
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

    def _lag(self, color: str) -> int | None:
        latest = self.recorder.latest(color)
        values = [s.lag for s in latest if s.state == "ACTIVE" and s.lag is not None]
        return sum(values) if values else None

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise ScenarioError(f"timed out after {timeout_s:g}s waiting for {what}")
            time.sleep(0.25)

    def _wait_serving(self, color: str, timeout_s: float = 90.0) -> None:
        """The color's group has formed and works: every partition assigned, records handled, lag about 0.

        Lag alone is 0 before any partition is assigned; switching then would find nothing committed to copy.
        """
        limit = max(10, int(self.options.rate / 2))

        def serving() -> bool:
            latest = [s for s in self.recorder.latest(color) if s.state == "ACTIVE"]
            handled = sum(s.handled for s in latest)
            assigned = [s.assigned for s in latest if s.assigned is not None]
            covered = not assigned or sum(assigned) >= self.options.partitions  # connectors report no assignment
            lag = self._lag(color)
            return handled > 0 and covered and lag is not None and lag <= limit

        self._wait(serving, timeout_s, f"{color} serving every partition with lag ~0")

    def _wait_caught_up(self, color: str, timeout_s: float = 90.0) -> None:
        """Lag of the active color at most half a second of production (the producer keeps going)."""
        limit = max(10, int(self.options.rate / 2))
        self._wait(lambda: (lag := self._lag(color)) is not None and lag <= limit, timeout_s, f"{color} lag ~0")

    # ---- the run ---------------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.time()
        try:
            controller = self._set_up()
        except Exception as exc:
            self._stop_all()  # consumers or connectors started before the failure must not outlive the run
            if isinstance(exc, ScenarioError):
                raise
            raise ScenarioError(f"setting up run {self.run_id}: {type(exc).__name__}: {exc}") from exc
        sampler = threading.Thread(target=self._sample_forever, name="scenario-sampler", daemon=True)
        self._start_producer(duration_s=600)
        sampler.start()
        cause: str | None = None
        try:
            self._wait_serving("blue")
            active = self._act(controller)
            self._stop_producer()
            self.recorder.event("producer_stopped")
            self._wait_caught_up(active, timeout_s=120)
            self._wait(lambda: self._lag(active) == 0, 60, f"{active} lag 0")
        except (ScenarioError, SwitchError, ControllerFencedError, KafkaException) as exc:
            cause = str(exc)
            log.error("Run %s: %s", self.run_id, exc)
        finally:
            self._stop_producer()
            self._sampling.set()
            sampler.join(10)
            self._stop_all()
        final_color = active if cause is None else "blue"
        validation, pending = self._validate(final_color)
        return self._result(started, validation, pending, cause, final_color)

    def _set_up(self) -> SwitchController:
        """Topic, blue as the active color, both colors' consumers (or connectors), and the controller."""
        create_topic(self.options.bootstrap, self.topic, self.options.partitions)
        controller_id = uuid.uuid4().hex[:12]
        ActiveColorWriter(self.options.bootstrap, controller_id).write(self.deployment_name, "blue", 1)
        if self.strategy == "E":
            self._start_connectors()
        else:
            self._start_consumers()
        deployment = Deployment(
            self.deployment_name, self.options.bootstrap,
            {c: [i.url for i in self.instances[c]] for c in COLORS} if self.strategy != "E" else {},
            groups=self._groups(), connect_url=self.options.connect_url,
            connectors={c: f"{self.run_id}-{c}" for c in COLORS},
        )
        return SwitchController(deployment, controller_id)

    def _switch(self, controller: SwitchController, to_color: str, health: HealthCheck | None = None) -> SwitchResult:
        kind = "rollback" if to_color == "blue" else "switch"
        self.recorder.event(f"{kind}_start", f"{self.strategy} -> {to_color}")
        result = controller.switch(self.strategy, to_color, health, action=kind)
        self.recorder.event(f"{kind}_end", f"ok={result.ok} {result.seconds:.3f}s")
        self.switches.append(result)
        if result.rolled_back:
            self.recorder.event("rollback_end", f"automatic: {result.error}")
        return result

    def _act(self, controller: SwitchController) -> str:
        """Act out the scenario; return the color that should be processing at the end."""
        settle = self.options.settle_s
        if self.scenario == 1:
            result = self._switch(controller, "green")
            time.sleep(settle)
            for instance in self.instances["blue"]:
                instance.stop()
            self.recorder.event("scale_down", "blue stopped")
            time.sleep(settle)
            return "green" if result.ok else "blue"
        if self.scenario == 2:
            self._switch(controller, "green")
            result = self._switch(controller, "blue")
            time.sleep(settle)
            return "blue" if result.ok else "green"
        if self.scenario == 3:
            return self._lagging_switch(controller)
        if self.scenario == 4:
            return self._switch_with_a_crash(controller)
        result = self._switch(controller, "green", HealthCheck(window_s=3.0, max_error_rate=0.2, ready_timeout_s=30))
        time.sleep(settle)
        return "green" if result.ok else "blue"

    def _set_faults(self, color: str, **faults: float) -> None:
        for instance in self.instances[color]:
            http_json("PUT", f"{instance.url}/faults", faults, timeout_s=10)
        self.recorder.event("fault", f"{color}: {faults}")

    def _lagging_switch(self, controller: SwitchController) -> str:
        # 1 s per record and key: blue handles about one record per key per second, fewer than are produced.
        self._set_faults("blue", delay_ms=1000.0)
        self._wait(lambda: (self._lag("blue") or 0) > 500, 120, "blue lag above 500")
        self.conditions["lag_at_switch_request"] = self._lag("blue")
        if self.variant == "wait-for-lag-0":
            self._set_faults("blue", delay_ms=0.0)
            self._wait_caught_up("blue", timeout_s=120)
        self.conditions["lag_at_switch"] = self._lag("blue")
        result = self._switch(controller, "green")
        self._set_faults("blue", delay_ms=0.0)
        time.sleep(self.options.settle_s)
        return "green" if result.ok else "blue"

    def _switch_with_a_crash(self, controller: SwitchController) -> str:
        """Kill an active blue member as the switch starts and restart it a second later.

        The controller's pause of the dead instance is retried until it is back; the restarted process reads
        the active color before joining, so it never processes as the wrong color.
        """
        victim = self.instances["blue"][0]
        for instance in self.instances["blue"] + self.instances["green"]:
            instance.rebalances_before = 0
        outcome: dict[str, SwitchResult] = {}
        switching = threading.Thread(target=lambda: outcome.update(r=self._switch(controller, "green")))
        switching.start()
        victim.kill()
        self.recorder.event("kill", victim.name)
        time.sleep(1.0)
        victim.start(paused=False)  # --deployment: it reads the active color and comes up in the intended state
        self.recorder.event("restart", victim.name)
        switching.join(180)
        victim.wait_ready()
        time.sleep(self.options.settle_s)
        result = outcome.get("r")
        return "green" if result is not None and result.ok else "blue"

    def _stop_all(self) -> None:
        if self.strategy == "E":
            for color in COLORS:
                for instance in self.instances[color]:
                    try:
                        http_json("PUT", f"{self.options.connect_url}/connectors/{instance.name}/stop")
                    except SwitchError as exc:
                        log.warning("Stopping connector %s: %s", instance.name, exc)
            return
        for instance in self.instances["blue"] + self.instances["green"]:
            instance.stop()

    # ---- judging ---------------------------------------------------------------------------------------

    def _validate(self, active: str) -> tuple[ValidationReport, int]:
        group = self._groups()[active]
        try:
            pending = read_pending(self.options.bootstrap, self.topic, group, timeout_s=60).pending_seqs
        except DrainError as exc:
            log.warning("Drain phase failed: %s", exc)
            pending = set()
        if self.strategy == "E":
            sinks = [(i.log_path, c) for c in COLORS for i in self.instances[c] if i.log_path.exists()]
            report = validate_files([self.work / "producer.jsonl"], sink_files=sinks, pending_seqs=pending)
        else:
            logs = [i.log_path for c in COLORS for i in self.instances[c] if i.log_path.exists()]
            report = validate_files([self.work / "producer.jsonl"], logs, pending_seqs=pending,
                                    activity_gap_s=self._activity_gap_s())
        return report, len(pending)

    def _activity_gap_s(self) -> float:
        """How long a color may handle nothing and still count as active: 25 records' time at the producer's rate.

        It must stay below the shortest pause of a color: a switch and a rollback take well under a second
        each, and with the validator's default of 1 s blue's idle time while green processed in between was
        bridged into one blue activity and reported as dual activity. A color handling records in the same
        period as the other still shows up, since its records are much closer together than this.
        """
        return min(1.0, max(0.1, 25 / self.options.rate))

    def _sampled_dual_active(self) -> int:
        """Samples in which instances of both colors were ACTIVE at once (the only measure for sink files)."""
        by_time: dict[float, set[str]] = {}
        for sample in self.recorder.samples:
            if sample.state == "ACTIVE":
                by_time.setdefault(sample.t, set()).add(sample.color)
        return sum(1 for colors in by_time.values() if len(colors) > 1)

    def _result(self, started: float, validation: ValidationReport, pending: int, cause: str | None,
                active_color: str) -> dict[str, Any]:
        """Judge the run by its criteria, write its run file and return the file's content."""
        criteria = self._criteria(validation, cause, active_color)
        failed = [f"{c.name}: {c.measured} (target {c.target})" for c in criteria if not c.passed]
        samples = self.recorder.samples
        rebalances = {c: sum(max((s.rebalances or 0) for s in samples if s.instance == i.name) if samples else 0
                             for i in self.instances[c]) for c in COLORS}
        record = RunRecord(
            verdict="FAIL" if failed else "PASS", cause="; ".join(failed) if failed else None,
            strategy=self.strategy, scenario=self.scenario, variant=self.variant, title=SCENARIOS[self.scenario],
            run_id=self.run_id, started_at=started, ended_at=time.time(), environment=environment(self.options),
            conditions={"topic": self.topic, "groups": self._groups(), "workload": self.options.workload,
                        "instances_per_color": self.options.instances, "pending_after_drain": pending,
                        **self.conditions},
            switches=self.switches, validation=ValidationSummary.model_validate(validation.to_dict()),
            samples=samples, events=self.recorder.events, rebalances=rebalances, criteria=criteria,
        )
        self.options.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.options.out_dir / f"{self.run_id}.json"
        write_run_record(record, path)
        log.info("Run %s: %s -> %s", self.run_id, record.verdict, path)
        return record.model_dump(mode="json", by_alias=True)

    def _criteria(self, validation: ValidationReport, cause: str | None, active_color: str) -> list[Criterion]:
        """The run's checks; scenario 4's switch waits for the restart, so its time goes into the conditions."""
        switches = [s for s in self.switches if s.action == "switch"]
        rollbacks = [s for s in self.switches if s.action == "rollback" or s.rolled_back]
        criteria = [
            Criterion("lost records", "0", str(validation.lost), validation.lost == 0),
            Criterion("dual-active windows", "0", str(validation.dual_active_count),
                      validation.dual_active_count == 0),
        ]
        if self.strategy == "E":
            dual = self._sampled_dual_active()
            criteria.append(Criterion("samples with both connectors running", "0", str(dual), dual == 0))
        expect_ok = self.scenario != 5
        for s in switches:
            seconds = sum(step.seconds for step in s.steps if not step.name.startswith(("health", "rollback")))
            if self.scenario == 4:  # the switch waits for the killed instance to come back: not a switch time
                self.conditions["switch_s_including_restart"] = round(seconds, 3)
                continue
            target = (LAGGING_TARGET_SWITCH_S if self.scenario == 3 else TARGET_SWITCH_S)[self.strategy]
            criteria.append(Criterion(f"switch to {s.to_color} time", f"< {target:g} s", f"{seconds:.3f} s",
                                      seconds < target))
            if expect_ok:
                criteria.append(Criterion(f"switch to {s.to_color} succeeded", "ok", "ok" if s.ok else str(s.error),
                                          s.ok))
        if self.scenario == 4:
            final = {s.instance: s.state for s in self.recorder.samples if s.state != "DOWN"}
            wrong = sorted(name for name, state in final.items()
                           if (state == "ACTIVE") != name.startswith(f"{active_color}-"))
            criteria.append(Criterion(f"only {active_color} active after the restart", "yes",
                                      "yes" if not wrong else f"wrong state: {', '.join(wrong)}", not wrong))
        if self.scenario == 5:
            rolled = any(s.rolled_back for s in self.switches)
            criteria.append(Criterion("automatic rollback", "rolled back",
                                      "rolled back" if rolled else "not rolled back", rolled))
        for s in rollbacks:
            steps = [st for st in s.steps if st.name.startswith("rollback")] if s.rolled_back else s.steps
            seconds = sum(st.seconds for st in steps if not st.name.startswith("health"))
            target = TARGET_ROLLBACK_S[self.strategy]
            criteria.append(Criterion("rollback time", f"< {target:g} s", f"{seconds:.3f} s", seconds < target))
        if cause is not None:
            criteria.append(Criterion("run completed", "yes", cause, False))
        return criteria


def environment(options: RunOptions) -> dict[str, Any]:
    return {
        "kafka": "4.1.1", "python": platform.python_version(), "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0], "partitions": options.partitions, "replicas": 1,
        "rate_per_s": options.rate, "instances_per_color": options.instances,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
