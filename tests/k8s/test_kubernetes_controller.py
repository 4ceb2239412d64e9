"""The Kubernetes-native switch controller against a real kube-apiserver (k8s_api) and the real Kafka.

No kubelet runs anything: each consumer is a local ``pyrallel consume`` process, represented by a Pod object
labelled like a color's pod, whose container port named ``control`` is the process's control port and whose
``status.podIP`` (patched through the pods/status subresource, as a kubelet would) is 127.0.0.1. The controllers are
``pyrallel controller serve --kubernetes`` processes with short Lease timings; switches are requested the way an
operator or Argo's post-promotion Job does (``pyrallel controller set-active``, a merge patch of spec.activeColor).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace

from pyrallel_consumer.bluegreen.active_color import read_active_color
from pyrallel_consumer.bluegreen.controller import SwitchError, http_json
from pyrallel_consumer.bluegreen.kubernetes.resource import ConsumerDeployment
from pyrallel_tools.bluegreen.processes import Instance
from pyrallel_tools.bluegreen.validation.from_logs import validate_files
from pyrallel_tools.localk8s.apiserver import LocalApiServer
from pyrallel_tools.localk8s.consumer_pods import (
    LeaseSettings,
    LocalPod,
    consumer_deployment_crd,
    start_controller,
    stop_controller,
)
from pyrallel_tools.localkafka.ports import free_port

pytestmark = pytest.mark.k8s

LEASE_S, RENEW_S, RETRY_S = 4.0, 3.0, 0.5
RATE = 100.0
CLI = [sys.executable, "-m", "pyrallel_tools.cli"]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def state_of(url: str) -> str | None:
    try:
        answer = http_json("GET", f"{url}/lifecycle/status", timeout_s=2)
    except SwitchError:
        return None
    return str(answer.get("state")) if isinstance(answer, dict) else None


@pytest.fixture(scope="session")
def crd_installed(k8s_api: LocalApiServer) -> LocalApiServer:
    k8s_api.install_crds([consumer_deployment_crd()])
    return k8s_api


@pytest.fixture
def namespace(crd_installed: LocalApiServer) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    client = crd_installed.client()
    client.create(Namespace(metadata=ObjectMeta(name=name)))
    try:
        yield name
    finally:
        client.delete(Namespace, name)
        client.close()


@dataclass
class Controller:
    identity: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def events(self) -> list[dict[str, Any]]:
        rows = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [row for row in self.events() if row.get("event") == event]


@dataclass
class Bed:
    """One test's deployment: topic, consumers (processes + Pod objects), controllers, producer."""

    api: LocalApiServer
    bootstrap: str
    namespace: str
    work: Path
    strategy: str
    name: str = field(default_factory=lambda: f"orders-{uuid.uuid4().hex[:8]}")
    topic: str = ""
    instances: dict[str, list[Instance]] = field(default_factory=lambda: {"blue": [], "green": []})
    controllers: list[Controller] = field(default_factory=list)
    producers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    produced_logs: list[Path] = field(default_factory=list)
    client: Client | None = None

    @property
    def kube(self) -> Client:
        if self.client is None:
            self.client = self.api.client(self.namespace)
        return self.client

    def groups(self) -> dict[str, str]:
        if self.strategy == "B":
            return {c: f"{self.name}-{c}" for c in ("blue", "green")}
        return {c: f"{self.name}-shared" for c in ("blue", "green")}

    def create_resource(self, color: str = "blue") -> None:
        spec: dict[str, Any] = {"activeColor": color, "strategy": self.strategy, "bootstrapServers": self.bootstrap,
                                "controlPort": 8080,
                                "health": {"windowSeconds": 1, "maxErrorRate": 0.2, "readyTimeoutSeconds": 30}}
        if self.strategy == "B":
            spec["groups"] = self.groups()
        self.kube.create(ConsumerDeployment(metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                                            spec=spec))

    def status(self) -> dict[str, Any]:
        resource = self.kube.get(ConsumerDeployment, self.name, namespace=self.namespace)
        return dict(resource.get("status") or {})

    def generation(self) -> int:
        meta = self.kube.get(ConsumerDeployment, self.name, namespace=self.namespace).metadata
        return int(meta.generation or 0) if meta else 0

    def holder(self) -> str | None:
        try:
            lease = self.kube.get(Lease, f"pyrallel-controller-{self.name}", namespace=self.namespace)
        except Exception:  # noqa: BLE001 - no Lease yet
            return None
        return lease.spec.holderIdentity if lease.spec else None

    # ---- consumers ---------------------------------------------------------------------------------------

    def add_consumer(self, color: str, n: int) -> Instance:
        group = self.groups()[color]
        args = [*CLI, "consume", "--bootstrap-servers", self.bootstrap, "--topic", self.topic, "--group", group,
                "--color", color, "--instance-id", f"{color}-{n}", "--commit-interval-ms", "200", "--until-signal",
                "--kafka", "session.timeout.ms=6000"]
        # No --deployment: like the chart's pods (PYRALLEL_START_PAUSED=true), a consumer comes up PAUSED whatever
        # the record says, and only the controller resumes it.
        if self.strategy == "B":
            args += ["--pause-mode", "hold"]
        instance = Instance(color, f"{color}-{n}", group, free_port(), self.work / f"consumer-{color}-{n}.jsonl",
                            args)
        instance.start(paused=True)  # the chart sets PYRALLEL_START_PAUSED=true: the controller resumes
        self.instances[color].append(instance)
        self.pod(instance).create(self.kube)
        return instance

    def pod(self, instance: Instance) -> LocalPod:
        return LocalPod(self.namespace, self.name, instance.color, instance.name, instance.port)

    def report_running(self, instance: Instance, restarts: int) -> None:
        """What a kubelet would write: the pod's IP, Running, and the container's restart count."""
        self.pod(instance).report_running(self.kube, restarts)

    def start_consumers(self, per_color: int = 1) -> None:
        for color in ("blue", "green"):
            for n in range(per_color):
                self.add_consumer(color, n)
        for instance in self.all_instances():
            instance.wait_ready()

    def all_instances(self) -> list[Instance]:
        return self.instances["blue"] + self.instances["green"]

    def states(self) -> dict[str, str | None]:
        return {i.name: state_of(i.url) for i in self.all_instances()}

    # ---- controllers and load ----------------------------------------------------------------------------

    def start_controller(self, identity: str) -> Controller:
        log_path = self.work / f"controller-{identity}.log"
        proc = start_controller(self.api.kubeconfig, self.namespace, self.name, identity, log_path,
                                LeaseSettings(LEASE_S, RENEW_S, RETRY_S, resync_s=2.0))
        controller = Controller(identity, proc, log_path)
        self.controllers.append(controller)
        return controller

    def produce(self, seconds: float) -> subprocess.Popen[bytes]:
        log_path = self.work / f"produced-{len(self.produced_logs)}.jsonl"
        self.produced_logs.append(log_path)
        proc = subprocess.Popen([*CLI, "produce", "--bootstrap-servers", self.bootstrap, "--topic", self.topic,
                                 "--rate", str(RATE), "--keys", "50", "--duration", str(seconds), "--log",
                                 str(log_path), "--seed", str(len(self.produced_logs))],
                                stdout=subprocess.DEVNULL, stderr=(self.work / "producer.stderr").open("ab"))
        self.producers.append(proc)
        return proc

    def set_active(self, color: str, wait_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "controller", "set-active", "--deployment", self.name, "--namespace",
                               self.namespace, "--color", color, "--wait", str(wait_s), "--kubeconfig",
                               str(self.api.kubeconfig)], capture_output=True, text=True, timeout=wait_s + 60,
                              check=False)

    def handled(self) -> int:
        seqs: set[int] = set()
        for instance in self.all_instances():
            if instance.log_path.exists():
                for line in instance.log_path.read_text().splitlines():
                    if line.startswith("{") and line.endswith("}"):
                        seqs.add(int(json.loads(line)["seq"]))
        return len(seqs)

    def produced(self) -> int:
        return sum(len(p.read_text().splitlines()) for p in self.produced_logs if p.exists())

    def finish_and_validate(self) -> dict[str, Any]:
        """Producer done, everything handled, consumers drained (SIGTERM): the validator's verdict."""
        for proc in self.producers:
            proc.wait(120)
        wait_until(lambda: self.handled() >= self.produced(), 90, "every acknowledged record handled", 0.5)
        for instance in self.all_instances():
            instance.stop()
        # Separate producer runs restart their seqs at 0: judge each run against every consumer log.
        reports = [validate_files([log], [i.log_path for i in self.all_instances()],
                                  activity_gap_s=25 / RATE).to_dict() for log in self.produced_logs]
        return {"lost": sum(r["lost"] for r in reports), "produced": sum(r["produced"] for r in reports),
                "dual_active_windows": [w for r in reports for w in r["dual_active_windows"]]}

    def close(self) -> None:
        for controller in self.controllers:
            stop_controller(controller.proc)
        for proc in self.producers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for instance in self.all_instances():
            instance.kill()
        if self.client is not None:
            self.client.close()


@pytest.fixture
def bed_factory(crd_installed: LocalApiServer, kafka_bootstrap: str, namespace: str, tmp_path: Path,
                new_topic: Callable[[int], str]) -> Iterator[Callable[[str], Bed]]:
    beds: list[Bed] = []

    def make(strategy: str) -> Bed:
        bed = Bed(crd_installed, kafka_bootstrap, namespace, tmp_path, strategy, topic=new_topic(4))
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


def _wait_active(bed: Bed, color: str, timeout_s: float = 60.0) -> None:
    """Status Active on ``color`` and its consumers resumed by the controller (they all started paused)."""
    wait_until(lambda: (s := bed.status()).get("phase") == "Active" and s.get("activeColor") == color,
               timeout_s, f"status Active on {color}")
    wait_until(lambda: all(state_of(i.url) == "ACTIVE" for i in bed.instances[color]), timeout_s,
               f"{color}'s consumers resumed by the controller")


class DualActiveWatch:
    """Samples every consumer's lifecycle state every 50 ms; records any moment with both colors ACTIVE."""

    def __init__(self, bed: Bed) -> None:
        self._bed = bed
        self._stop = threading.Event()
        self.samples = 0
        self.dual: list[dict[str, str | None]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DualActiveWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            states = {i.color + "/" + i.name: state_of(i.url) for i in self._bed.all_instances()}
            self.samples += 1
            colors = {name.split("/")[0] for name, state in states.items() if state == "ACTIVE"}
            if colors == {"blue", "green"}:
                self.dual.append(states)


# ---- a) a switch through the custom resource ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["C", "B"])
def test_switch_requested_through_the_resource_loses_nothing(bed_factory: Callable[[str], Bed],
                                                               strategy: str) -> None:
    bed = bed_factory(strategy)
    bed.start_consumers()
    bed.create_resource("blue")
    bed.start_controller("ctl-a")
    _wait_active(bed, "blue")
    assert read_active_color(bed.bootstrap, bed.name).color == "blue"  # type: ignore[union-attr]
    assert all(state_of(i.url) == "PAUSED" for i in bed.instances["green"])

    bed.produce(10)
    wait_until(lambda: bed.handled() >= 200, 30, "blue handling the first records")
    with DualActiveWatch(bed) as watch:
        switched = bed.set_active("green")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    status = bed.status()
    last = status["lastSwitch"]
    assert (status["phase"], status["activeColor"], status["generation"]) == ("Active", "green", 2)
    assert status["observedGeneration"] == bed.generation()
    assert (last["strategy"], last["from"], last["to"], last["ok"], last["rolledBack"]) == (
        strategy, "blue", "green", True, False)
    # The status is written when the switch ends; the gap follows once the new color handled a record.
    wait_until(lambda: bed.status()["lastSwitch"].get("processingGapSeconds") is not None, 60,
               "the processing gap recorded in the status")
    last = bed.status()["lastSwitch"]
    assert isinstance(last["processingGapSeconds"], float | int) and last["processingGapSeconds"] > 0, last
    assert "processingGapNote" not in last, last
    assert any(s["name"] == "pause blue" for s in last["steps"])
    assert {c["type"]: c["status"] for c in status["conditions"]}.get("Progressing") == "False"
    assert all(state_of(i.url) == "ACTIVE" for i in bed.instances["green"])
    assert all(state_of(i.url) == "PAUSED" for i in bed.instances["blue"])
    steps = bed.controllers[0].logged("switch_step")
    assert [s["step"] for s in steps][:1] == ["pause blue"], steps
    assert bed.controllers[0].logged("switch_finished")[-1]["ok"] is True

    verdict = bed.finish_and_validate()
    assert verdict["lost"] == 0, verdict
    assert verdict["dual_active_windows"] == [], verdict
    assert verdict["produced"] >= 500
    assert watch.samples > 10 and watch.dual == [], watch.dual[:3]
    print(f"strategy {strategy}: controller's processing gap {last['processingGapSeconds']}s, "
          f"switch {last['seconds']}s, {verdict['produced']} produced, 0 lost")


def _leader_and_standby(bed: Bed) -> tuple[Controller, Controller]:
    """Blue active under controller ``ctl-a`` (the leader), and ``ctl-b`` started after it, standing by."""
    bed.start_consumers()
    bed.create_resource("blue")
    leader = bed.start_controller("ctl-a")
    _wait_active(bed, "blue")
    standby = bed.start_controller("ctl-b")
    wait_until(lambda: any("standing by" in str(r.get("message")) for r in standby.events()), 30,
               "the second controller standing by")
    return leader, standby


# ---- b) a standby does not act ------------------------------------------------------------------------------


def test_a_second_controller_does_not_act_while_the_first_holds_the_lease(bed_factory: Callable[[str], Bed]) -> None:
    bed = bed_factory("C")
    leader, standby = _leader_and_standby(bed)
    assert bed.holder() == "ctl-a"
    holders: list[str | None] = []
    poller_stop = threading.Event()

    def poll_holder() -> None:
        while not poller_stop.wait(0.1):
            holders.append(bed.holder())

    poller = threading.Thread(target=poll_holder, daemon=True)
    poller.start()
    try:
        switched = bed.set_active("green")
        assert switched.returncode == 0, switched.stdout + switched.stderr
        back = bed.set_active("blue")
        assert back.returncode == 0, back.stdout + back.stderr
    finally:
        poller_stop.set()
        poller.join(5)
    assert holders and set(holders) == {"ctl-a"}, set(holders)
    assert leader.proc.poll() is None, "the leader was fenced (the standby must not have made a writer)"
    assert standby.proc.poll() is None
    acting = {"lease_acquired", "switch_started", "switch_step", "switch_finished", "pod_paused", "pod_resumed"}
    assert [r for r in standby.events() if r.get("event") in acting] == []
    assert len(leader.logged("switch_finished")) == 2
    assert bed.status()["generation"] == 3
    assert bed.status()["leader"] == "ctl-a"


# ---- c) the leader dies ---------------------------------------------------------------------------------------


def test_killed_leader_is_replaced_within_the_lease_without_dual_active(bed_factory: Callable[[str], Bed]) -> None:
    bed = bed_factory("C")
    leader, standby = _leader_and_standby(bed)
    bed.produce(20)
    wait_until(lambda: bed.handled() >= 100, 30, "blue handling")
    with DualActiveWatch(bed) as watch:
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        killed = time.monotonic()
        wait_until(lambda: bed.holder() == "ctl-b", LEASE_S + 2 * RETRY_S + 5, "the standby taking the lease", 0.05)
        takeover_s = time.monotonic() - killed
        # The new leader acts: a switch requested now is performed by it.
        switched = bed.set_active("green")
        assert switched.returncode == 0, switched.stdout + switched.stderr
    assert standby.logged("lease_acquired"), "the standby never logged lease_acquired"
    assert standby.logged("switch_finished")[-1]["ok"] is True
    assert bed.status()["leader"] == "ctl-b"
    verdict = bed.finish_and_validate()
    assert watch.samples > 20 and watch.dual == [], watch.dual[:3]
    assert verdict["lost"] == 0, verdict
    assert verdict["dual_active_windows"] == [], verdict
    print(f"takeover after SIGKILL: {takeover_s:.2f}s (lease {LEASE_S:g}s, retry {RETRY_S:g}s)")


# ---- d) restarted consumers -----------------------------------------------------------------------------------


def test_restarted_consumers_follow_the_active_color(bed_factory: Callable[[str], Bed]) -> None:
    bed = bed_factory("C")
    bed.start_consumers()
    bed.create_resource("blue")
    controller = bed.start_controller("ctl-a")
    _wait_active(bed, "blue")
    bed.produce(15)
    wait_until(lambda: bed.handled() >= 100, 30, "blue handling")
    green, blue = bed.instances["green"][0], bed.instances["blue"][0]
    green_states: list[str | None] = []
    watching = threading.Event()

    def watch_green() -> None:
        while not watching.wait(0.05):
            green_states.append(state_of(green.url))

    watcher = threading.Thread(target=watch_green, daemon=True)
    # The inactive color's consumer restarts (same pod): it comes up paused and stays paused.
    green.kill()
    green.start(paused=True)
    bed.report_running(green, restarts=1)
    green.wait_ready()
    watcher.start()
    try:
        # The active color's consumer restarts paused too: the controller resumes it.
        blue.kill()
        blue.start(paused=True)
        bed.report_running(blue, restarts=1)
        blue.wait_ready()
        wait_until(lambda: state_of(blue.url) == "ACTIVE", 20, "the restarted blue consumer resumed")
        resumed = [r for r in controller.logged("pod_resumed") if r.get("pod") == blue.name]
        assert len(resumed) >= 2, resumed  # once at the start, once after the restart
        # The pass that resumed blue listed every pod, green's restarted one among them (it was running before
        # blue was killed), and left it paused: no fixed window needed.
    finally:
        watching.set()
        watcher.join(5)
    assert green_states and "ACTIVE" not in green_states, green_states
    assert state_of(green.url) == "PAUSED"
    assert [r for r in controller.logged("pod_resumed") if r.get("pod") == green.name] == []
    verdict = bed.finish_and_validate()
    assert verdict["lost"] == 0, verdict
    assert verdict["dual_active_windows"] == [], verdict


# ---- strategy E under Strimzi -------------------------------------------------------------------------------


def test_strategy_e_sets_the_kafkaconnector_state_the_strimzi_operator_reconciles_from(
        crd_installed: LocalApiServer, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    """The switch's stop/resume of a connector also sets spec.state of its KafkaConnector (else the operator would
    undo a REST-only stop); a connector with no KafkaConnector is left to the REST API."""
    from pyrallel_consumer.bluegreen.kubernetes.client import client_factory, load_config
    from pyrallel_consumer.bluegreen.kubernetes.strimzi import KAFKA_CONNECTORS, StrimziConnectorState

    client = crd_installed.client(namespace)
    served = None
    for resource in KAFKA_CONNECTORS:
        try:
            client.create(resource(metadata=ObjectMeta(name="orders-blue", namespace=namespace,
                                                       labels={"strimzi.io/cluster": "connect"}),
                                   spec={"class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                                         "tasksMax": 1, "state": "running", "config": {"topics": "orders"}}),
                          namespace=namespace)
        except Exception:  # noqa: BLE001 - a version the installed CRD does not serve
            continue
        served = resource
        break
    assert served is not None, "no Strimzi KafkaConnector version is served"
    set_state = StrimziConnectorState(client_factory(load_config(crd_installed.kubeconfig), namespace), namespace)
    set_state("orders-blue", "stopped")
    assert client.get(served, "orders-blue", namespace=namespace)["spec"]["state"] == "stopped"
    set_state("orders-blue", "running")
    assert client.get(served, "orders-blue", namespace=namespace)["spec"]["state"] == "running"
    with caplog.at_level(logging.INFO, logger="pyrallel_consumer.bluegreen.kubernetes.strimzi"):
        set_state("no-such-connector", "stopped")  # nothing to patch: the REST API alone, said at INFO
    assert any("No KafkaConnector no-such-connector" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records), caplog.records
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(ApiError) as missing:  # and it created nothing
        client.get(served, "no-such-connector", namespace=namespace)
    assert missing.value.status.code == 404
    client.close()


# ---- SIGTERM during a switch ----------------------------------------------------------------------------------


def test_sigterm_during_a_switch_finishes_it_then_releases_the_lease(bed_factory: Callable[[str], Bed]) -> None:
    """The leader keeps renewing while it finishes the switch it is in, writes the outcome, then releases the
    Lease (exit 0); the standby acts only after that."""
    bed = bed_factory("C")
    leader, standby = _leader_and_standby(bed)
    requester = subprocess.Popen([*CLI, "controller", "set-active", "--deployment", bed.name, "--namespace",
                                  bed.namespace, "--color", "green", "--kubeconfig", str(bed.api.kubeconfig)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert requester.wait(60) == 0
    wait_until(lambda: bed.status().get("phase") == "Switching", 30, "the switch running", 0.02)
    leader.proc.send_signal(signal.SIGTERM)
    assert leader.proc.wait(90) == 0, leader.log_path.read_text()[-3000:]
    status = bed.status()
    assert (status["phase"], status["activeColor"], status["leader"]) == ("Active", "green", "ctl-a"), status
    assert status["lastSwitch"]["ok"] is True, status["lastSwitch"]
    assert leader.logged("switch_finished")[-1]["ok"] is True
    assert leader.logged("lease_released") and not leader.logged("lease_lost")
    assert not leader.logged("lease_renew_failed")
    finished_at = leader.logged("switch_finished")[-1]["ts"]
    wait_until(lambda: bed.holder() == "ctl-b", 30, "the standby taking the released Lease")
    taken = standby.logged("lease_acquired")
    assert taken and taken[0]["ts"] >= finished_at, (taken, finished_at)
    _wait_active(bed, "green")
    assert all(state_of(i.url) == "PAUSED" for i in bed.instances["blue"])
    print(f"SIGTERM during the switch: leader exited 0 after it, standby acquired at {taken[0]['ts']}")
