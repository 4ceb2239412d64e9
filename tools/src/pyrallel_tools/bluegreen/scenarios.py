"""Scenario runs: a real load producer, real consumer processes per color, a switch, then the validator.

Each run starts from blue processing at lag ~0 with the producer at a fixed rate, acts out one scenario,
stops the producer, lets the active color catch up, stops everything and judges the logs. It samples
every instance twice a second (state, handled count, lag) for the report's plots and writes one JSON file
per run, the input of ``pyrallel report``. The ``pyrallel scenario run`` command runs one after the other,
each in the calling thread; the parts of a run live next to it: what it is (:mod:`.run_spec`), its processes
(:mod:`.processes`), its status sampler (:mod:`.sampler`) and its criteria (:mod:`.criteria`).

A run's switches go through a :class:`Switcher`: the in-process ``SwitchController`` (driver ``direct``) or the
Kubernetes-native controller through a ConsumerDeployment (driver ``kubernetes``, :mod:`.kube_driver`).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import confluent_kafka
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

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
from pyrallel_tools.bluegreen.criteria import judge
from pyrallel_tools.bluegreen.drain import DrainError, read_pending
from pyrallel_tools.bluegreen.processes import Fleet
from pyrallel_tools.bluegreen.run_record import (
    LatencyPoint,
    RunRecord,
    RunSwitch,
    SwitchFigures,
    ValidationSummary,
    write_run_record,
)
from pyrallel_tools.bluegreen.run_spec import SCENARIOS, RunOptions, RunSpec, ScenarioError
from pyrallel_tools.bluegreen.sampler import Recorder, StatusSampler, wait_for
from pyrallel_tools.bluegreen.sink_watch import SinkWatcher
from pyrallel_tools.bluegreen.validation.findings import ValidationReport
from pyrallel_tools.bluegreen.validation.from_logs import validate_files
from pyrallel_tools.bluegreen.validation.switch_impact import measure_switch_impact_files, switch_windows
from pyrallel_tools.localkafka.cluster import brokers_seen, local_kafka_version
from pyrallel_tools.localkafka.topics import create_topic

if TYPE_CHECKING:  # lightkube is imported only by runs of the Kubernetes driver
    from pyrallel_tools.bluegreen.kube_driver import KubernetesDriver

log = logging.getLogger(__name__)


class Switcher(Protocol):
    """What a scenario switches through: ``SwitchController`` itself, or the Kubernetes driver's switcher."""

    def switch(self, strategy: str, to_color: str, health: HealthCheck | None = None,
               action: str = "switch") -> SwitchResult: ...


class ScenarioRun:
    """One strategy x scenario (x variant) run."""

    def __init__(self, strategy: str, scenario: int, variant: str | None, options: RunOptions) -> None:
        self.spec = RunSpec.checked(strategy, scenario, variant, options)
        self.recorder = Recorder()
        self.fleet = Fleet(self.spec)
        self.sampler = StatusSampler(self.spec, self.fleet.instances, self.recorder)
        self.switches: list[SwitchResult] = []
        self.conditions: dict[str, Any] = {}
        self.sink_watch = (SinkWatcher(self.spec.work, {c: self.spec.connector(c) for c in COLORS})
                           if self.spec.strategy == "E" else None)
        """Strategy E: stamps the sink files' lines as they appear, the connectors' handling times."""
        self.kube: KubernetesDriver | None = None
        if options.driver == "kubernetes":
            from pyrallel_tools.bluegreen.kube_driver import KubernetesDriver

            self.kube = KubernetesDriver(self.spec)

    # ---- the run ---------------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        self.spec.work.mkdir(parents=True, exist_ok=True)
        started = time.time()
        try:
            controller = self._set_up()
        except Exception as exc:
            self._stop_kube()
            self.fleet.stop_all()  # consumers or connectors started before the failure must not outlive the run
            self._stop_sink_watch()
            if isinstance(exc, ScenarioError):
                raise
            raise ScenarioError(f"setting up run {self.spec.run_id}: {type(exc).__name__}: {exc}") from exc
        self.fleet.start_producer(duration_s=600)
        self.sampler.start()
        cause: str | None = None
        try:
            self.sampler.wait_settled("blue")
            active = self._act(controller)
            self.fleet.stop_producer()
            self.recorder.event("producer_stopped")
            self.sampler.wait_caught_up(active, timeout_s=120)
            wait_for(lambda: self.recorder.lag(active) == 0, 60, f"{active} lag 0")
        except (ScenarioError, SwitchError, ControllerFencedError, KafkaException) as exc:
            cause = str(exc)
            log.error("Run %s: %s", self.spec.run_id, exc)
        finally:
            self.fleet.stop_producer()
            self.sampler.stop()
            self._stop_kube()  # no controller acting on the consumers while they stop
            self.fleet.stop_all()
            self._stop_sink_watch()
        final_color = active if cause is None else "blue"
        validation, pending = self._validate(final_color)
        return self._result(started, validation, pending, cause, final_color)

    def _set_up(self) -> Switcher:
        """Topic, blue as the active color, both colors' consumers (or connectors), and the controller."""
        spec = self.spec
        create_topic(spec.options.bootstrap, spec.topic, spec.options.partitions)
        # The Kubernetes controller writes the record as the deployment (its writer fences this one at once).
        controller_id = spec.deployment_name if self.kube is not None else uuid.uuid4().hex[:12]
        ActiveColorWriter(spec.options.bootstrap, controller_id).write(spec.deployment_name, "blue", 1)
        if self.sink_watch is not None:
            self.sink_watch.start()
            self.fleet.start_connectors()
        else:
            self.fleet.start_consumers()
        instances = self.fleet.instances
        if self.kube is not None:
            return self.kube.start(instances)
        deployment = Deployment(
            spec.deployment_name, spec.options.bootstrap,
            {c: [i.url for i in instances[c]] for c in COLORS} if spec.strategy != "E" else {},
            groups=spec.groups(), connect_url=spec.options.connect_url,
            connectors={c: spec.connector(c) for c in COLORS},
        )
        return SwitchController(deployment, controller_id)

    # ---- the scenarios ---------------------------------------------------------------------------------

    def _act(self, controller: Switcher) -> str:
        """Act out the scenario; return the color that should be processing at the end."""
        settle = self.spec.options.settle_s
        if self.spec.scenario == 1:
            result = self._switch(controller, "green")
            time.sleep(settle)
            for instance in self.fleet.instances["blue"]:
                instance.stop()
            self.recorder.event("scale_down", "blue stopped")
            time.sleep(settle)
            return "green" if result.ok else "blue"
        if self.spec.scenario == 2:
            self._switch(controller, "green")
            result = self._switch(controller, "blue")
            time.sleep(settle)
            return "blue" if result.ok else "green"
        if self.spec.scenario == 3:
            return self._lagging_switch(controller)
        if self.spec.scenario == 4:
            return self._switch_with_a_crash(controller)
        if self.spec.scenario == 6:
            return self._repeated_switches(controller)
        result = self._switch(controller, "green", HealthCheck(window_s=3.0, max_error_rate=0.2, ready_timeout_s=30))
        time.sleep(settle)
        return "green" if result.ok else "blue"

    def _repeated_switches(self, controller: Switcher) -> str:
        """Switch to green and back to blue, ``options.switches`` times in all, each from a settled state.

        Each switch gets its own window of processing (settled, then ``settle_s`` more), so its processing gap
        is the hand-over's own and not the next switch's. A failed switch ends the scenario: the criteria say why.
        """
        active = "blue"
        for _ in range(self.spec.options.switches):
            target = "green" if active == "blue" else "blue"
            result = self._switch(controller, target)
            if not result.ok:
                return active
            active = target
            self.sampler.wait_settled(active)
            time.sleep(self.spec.options.settle_s)
        return active

    def _switch(self, controller: Switcher, to_color: str, health: HealthCheck | None = None) -> SwitchResult:
        """Switch, and mark the switch's start and end where the controller measured them (``started_at``,
        ``seconds``): the plots' switch window is then the reported switch time, without the controller's reading
        of the current color before it (about 0.5 s for a fresh control-topic reader)."""
        kind = "rollback" if to_color == "blue" else "switch"
        result = controller.switch(self.spec.strategy, to_color, health, action=kind)
        ended = result.started_at + result.seconds
        self.recorder.event(f"{kind}_start", f"{self.spec.strategy} -> {to_color}", at=result.started_at)
        self.recorder.event(f"{kind}_end", f"ok={result.ok} {result.seconds:.3f}s", at=ended)
        self.switches.append(result)
        if result.rolled_back:
            self.recorder.event("rollback_end", f"automatic: {result.error}", at=ended)
        return result

    def _set_faults(self, color: str, **faults: float) -> None:
        for instance in self.fleet.instances[color]:
            http_json("PUT", f"{instance.url}/faults", faults, timeout_s=10)
        self.recorder.event("fault", f"{color}: {faults}")

    def _lagging_switch(self, controller: Switcher) -> str:
        # 1 s per record and key: blue handles about one record per key per second, fewer than are produced.
        self._set_faults("blue", delay_ms=1000.0)
        wait_for(lambda: (self.recorder.lag("blue") or 0) > 500, 120, "blue lag above 500")
        self.conditions["lag_at_switch_request"] = self.recorder.lag("blue")
        if self.spec.variant == "wait-for-lag-0":
            self._set_faults("blue", delay_ms=0.0)
            self.sampler.wait_caught_up("blue", timeout_s=120)
        self.conditions["lag_at_switch"] = self.recorder.lag("blue")
        result = self._switch(controller, "green")
        self._set_faults("blue", delay_ms=0.0)
        time.sleep(self.spec.options.settle_s)
        return "green" if result.ok else "blue"

    def _switch_with_a_crash(self, controller: Switcher) -> str:
        """Kill an active blue member as the switch starts and restart it a second later.

        The controller's pause of the dead instance is retried until it is back; the restarted process reads
        the active color before joining, so it never processes as the wrong color.
        """
        victim = self.fleet.instances["blue"][0]
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
        time.sleep(self.spec.options.settle_s)
        result = outcome.get("r")
        return "green" if result is not None and result.ok else "blue"

    # ---- judging ---------------------------------------------------------------------------------------

    def _validate(self, active: str) -> tuple[ValidationReport, int]:
        spec, instances = self.spec, self.fleet.instances
        try:
            pending = read_pending(spec.options.bootstrap, spec.topic, spec.groups()[active],
                                   timeout_s=60).pending_seqs
        except DrainError as exc:
            log.warning("Drain phase failed: %s", exc)
            pending = set()
        if spec.strategy == "E":
            sinks = [(i.log_path, c) for c in COLORS for i in instances[c] if i.log_path.exists()]
            report = validate_files([spec.work / "producer.jsonl"], sink_files=sinks, pending_seqs=pending)
        else:
            report = validate_files([spec.work / "producer.jsonl"], self._consumer_logs(), pending_seqs=pending,
                                    activity_gap_s=self._activity_gap_s())
        return report, len(pending)

    def _stop_kube(self) -> None:
        """The Kubernetes driver's controller and API server, if any; a failure to stop is logged, not raised."""
        if self.kube is None:
            return
        try:
            self.kube.stop()
        except Exception as exc:  # noqa: BLE001 - the run's result must still be written
            log.warning("Stopping the Kubernetes driver of run %s: %s", self.spec.run_id, exc)

    def _stop_sink_watch(self) -> None:
        """Stop stamping the sink files (strategy E); a line seen but not produced is counted in the conditions."""
        if self.sink_watch is None:
            return
        stats = self.sink_watch.stop()
        if stats.not_produced or stats.malformed:
            self.conditions["sink_lines_not_measured"] = stats.not_produced + stats.malformed

    def _consumer_logs(self) -> list[Path]:
        """The per-record logs of both colors' consumers (strategy E has sink files instead)."""
        return [i.log_path for c in COLORS for i in self.fleet.instances[c] if i.log_path.exists()]

    def _felt_switches(self) -> tuple[list[RunSwitch], list[LatencyPoint]]:
        """The controller's switches with what the records felt of each (measured from the logs, judged by the
        criteria), and the run's latency series."""
        spec = self.spec
        logs = self.sink_watch.observed_logs if self.sink_watch is not None else self._consumer_logs()
        producer = [path] if (path := spec.work / "producer.jsonl").exists() else []
        figures, buckets = measure_switch_impact_files(producer, logs, switch_windows(self.switches))
        felt: dict[tuple[int, str], SwitchFigures] = {
            (f.window.index, f.window.action): SwitchFigures(f.processing_gap_s, f.processing_gap_end,
                                                             f.latency_p50_s, f.latency_p99_s, f.latency_max_s,
                                                             f.records)
            for f in figures}
        switches = [RunSwitch.of(result, felt.get((i, result.action)),
                                 felt.get((i, "rollback")) if result.action == "switch" else None,
                                 controller_gap=(getattr(result, "controller_gap_s", None),
                                                 getattr(result, "controller_gap_note", None)))
                    for i, result in enumerate(self.switches)]
        return switches, [LatencyPoint(b.t, b.p50_s, b.max_s, b.records) for b in buckets]

    def _activity_gap_s(self) -> float:
        """How long a color may handle nothing and still count as active: 25 records' time at the producer's rate.

        It must stay below the shortest pause of a color: a switch and a rollback take well under a second
        each, and with the validator's default of 1 s blue's idle time while green processed in between was
        bridged into one blue activity and reported as dual activity. A color handling records in the same
        period as the other still shows up, since its records are much closer together than this.
        """
        return min(1.0, max(0.1, 25 / self.spec.options.rate))

    def _result(self, started: float, validation: ValidationReport, pending: int, cause: str | None,
                active_color: str) -> dict[str, Any]:
        """Judge the run by its criteria, write its run file and return the file's content."""
        spec, options, samples = self.spec, self.spec.options, self.recorder.samples
        switches, latency = self._felt_switches()
        criteria, measured = judge(spec, switches, samples, validation, cause, active_color)
        self.conditions.update(measured)
        failed = [f"{c.name}: {c.measured} (target {c.target})" for c in criteria if not c.passed]
        rebalances = {c: sum(max((s.rebalances or 0) for s in samples if s.instance == i.name) if samples else 0
                             for i in self.fleet.instances[c]) for c in COLORS}
        record = RunRecord(
            verdict="FAIL" if failed else "PASS", cause="; ".join(failed) if failed else None,
            strategy=spec.strategy, scenario=spec.scenario, variant=spec.variant, title=SCENARIOS[spec.scenario],
            run_id=spec.run_id, started_at=started, ended_at=time.time(),
            environment={**environment(options), **(self.kube.environment() if self.kube else {"driver": "direct"})},
            conditions={"topic": spec.topic, "groups": spec.groups(), "workload": options.workload,
                        "instances_per_color": options.instances, "pending_after_drain": pending,
                        **(self.kube.conditions() if self.kube else {}), **self.conditions},
            switches=switches, latency=latency,
            validation=ValidationSummary.model_validate(validation.to_dict()),
            samples=samples, events=self.recorder.events, rebalances=rebalances, criteria=criteria,
        )
        options.out_dir.mkdir(parents=True, exist_ok=True)
        path = options.out_dir / f"{spec.run_id}.json"
        write_run_record(record, path)
        log.info("Run %s: %s -> %s", spec.run_id, record.verdict, path)
        return record.model_dump(mode="json", by_alias=True)


def environment(options: RunOptions) -> dict[str, Any]:
    """Versions, sizes and the group settings a switch's gap depends on (the consumers' and the broker's)."""
    return {
        "kafka": local_kafka_version(options.bootstrap), "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__, "librdkafka": confluent_kafka.libversion()[0],
        "partitions": options.partitions,
        "replicas": min(3, brokers_seen(options.bootstrap, timeout_s=10.0)),  # topics take the brokers' default
        "rate_per_s": options.rate, "instances_per_color": options.instances,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "consumer_kafka": " ".join(options.consumer_kafka) or "library defaults",
        "group_protocol": os.environ.get("PYRALLEL_GROUP_PROTOCOL", "classic"),
        **broker_group_settings(options.bootstrap),
    }


BROKER_GROUP_SETTINGS = ("group.initial.rebalance.delay.ms", "group.consumer.heartbeat.interval.ms",
                         "group.consumer.session.timeout.ms")
"""Broker settings that bound how fast a group hands partitions over (see docs/decisions.md)."""


def broker_group_settings(bootstrap: str) -> dict[str, str]:
    """The :data:`BROKER_GROUP_SETTINGS` of the first broker, prefixed ``broker ``; empty when unreadable."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        broker = min(admin.list_topics(timeout=10).brokers)
        resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
        entries = admin.describe_configs([resource])[resource].result(timeout=10)
    except (KafkaException, ValueError) as exc:
        log.warning("Reading the broker's group settings failed: %s", exc)
        return {}
    return {f"broker {name}": entries[name].value for name in BROKER_GROUP_SETTINGS if name in entries}
