"""The scenario runner's Kubernetes driver: a run's switches requested through the Kubernetes-native controller.

With ``pyrallel scenario run --driver kubernetes`` the runner does not switch in-process. It starts a local API
server in the run's work directory (or uses ``--kubeconfig``), installs the ConsumerDeployment CRD from the Helm
chart, creates a namespace for the run with a Pod object per consumer process of the fleet (see
:mod:`pyrallel_tools.localk8s.consumer_pods`) and the run's ConsumerDeployment (blue active, the run's strategy),
and starts ``pyrallel controller serve --kubernetes`` as a subprocess. Each switch of the scenario is then what an
operator does: a merge patch of ``spec.activeColor`` (and ``spec.health``), then a wait until the controller has
observed that generation and finished (phase Active, RolledBack or Failed). ``status.lastSwitch`` becomes the
same ``SwitchResult`` the in-process controller returns, plus the controller's own processing-gap estimate.

Called from the scenario runner's thread (scenario 4's switch thread is not supported here: see
:data:`KUBERNETES_SCENARIOS`). :meth:`KubernetesDriver.stop` stops what :meth:`KubernetesDriver.start` started,
whatever state it got to.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from pyrallel_consumer.bluegreen.controller import COLORS, HealthCheck, Step, SwitchError, SwitchResult
from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS, client_factory, describe, load_config
from pyrallel_consumer.bluegreen.kubernetes.gap import BOUND_S as GAP_BOUND_S
from pyrallel_consumer.bluegreen.kubernetes.resource import FINAL_PHASES, GAP_BEING_MEASURED, ConsumerDeployment
from pyrallel_tools.bluegreen.processes import Instance
from pyrallel_tools.bluegreen.run_spec import RunSpec, ScenarioError
from pyrallel_tools.localk8s.apiserver import LocalApiServer, install_crds
from pyrallel_tools.localk8s.consumer_pods import (
    LeaseSettings,
    LocalPod,
    consumer_deployment_crd,
    server_version,
    start_controller,
    stop_controller,
)
from pyrallel_tools.localkafka.errors import LocalKafkaError

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
SWITCH_TIMEOUT_S = 300.0
"""A switch's own bound (health checks, a rollback, the controller's 30 s wait for the first record included)."""
POLL_S = 0.1
CONTROLLER_IDENTITY = "scenario-runner"


@dataclass(slots=True)
class KubernetesSwitchResult(SwitchResult):
    """A switch as the Kubernetes controller reported it in ``status.lastSwitch``: its steps (their start times
    placed one after the other from the request, the status giving only durations) and its own gap estimate."""

    controller_gap_s: float | None = None
    """``processingGapSeconds``: old color's pause completed to the new color's first handled record, polled."""
    controller_gap_note: str | None = None
    """``processingGapNote``: why there is no estimate."""


class KubernetesDriver:
    """The Kubernetes side of one run: API server (own or given), namespace, Pod objects, resource, controller."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.namespace = f"pyrallel-{spec.run_id.lower()}"
        self.name = spec.deployment_name
        self.controller_log = spec.work / "controller.log"
        self._own: LocalApiServer | None = None
        self._kubeconfig: Path | None = spec.options.kubeconfig
        self._client: Client | None = None
        self._namespace_created = False
        self._controller: subprocess.Popen[bytes] | None = None
        self.version: str | None = None
        self.api_where = "a local API server in the run's work directory" if self._kubeconfig is None else \
            f"the API server of {self._kubeconfig}"

    # ---- start and stop ----------------------------------------------------------------------------------

    def start(self, instances: dict[str, list[Instance]]) -> KubernetesSwitcher:
        """Everything up to the controller leading with blue active; the switcher that requests the switches."""
        for noisy in ("httpx2", "httpx"):  # one INFO line per request: ten a second while a switch is awaited
            logging.getLogger(noisy).setLevel(logging.WARNING)
        kubeconfig = self._api_server()
        self.version = server_version(kubeconfig)
        self._client = client_factory(load_config(kubeconfig), self.namespace, timeout_s=30.0)()
        install_crds(self._client, [consumer_deployment_crd()])
        self._client.create(Namespace(metadata=ObjectMeta(name=self.namespace)))
        self._namespace_created = True
        for color in COLORS:
            for instance in instances[color]:
                if instance.port:  # strategy E's connectors are no pods
                    LocalPod(self.namespace, self.name, color, instance.name, instance.port).create(self._client)
        self._client.create(ConsumerDeployment(metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                                               spec=self._resource_spec()))
        self._controller = start_controller(kubeconfig, self.namespace, self.name, CONTROLLER_IDENTITY,
                                            self.controller_log, LeaseSettings())
        switcher = KubernetesSwitcher(self._client, self.namespace, self.name, self._controller, self.controller_log)
        switcher.wait_settled(1, READY_TIMEOUT_S)
        log.info("Run %s: ConsumerDeployment %s/%s active on blue, controller log %s", self.spec.run_id,
                 self.namespace, self.name, self.controller_log)
        return switcher

    def _api_server(self) -> Path:
        if self._kubeconfig is not None:
            return self._kubeconfig
        self._own = LocalApiServer(self.spec.work / "k8s")
        try:
            self._own.up()
        except LocalKafkaError as exc:
            raise ScenarioError(f"starting the local API server for the Kubernetes driver: {exc}") from exc
        self._kubeconfig = self._own.kubeconfig
        return self._kubeconfig

    def _resource_spec(self) -> dict[str, Any]:
        spec = self.spec
        resource: dict[str, Any] = {"activeColor": "blue", "strategy": spec.strategy,
                                    "bootstrapServers": spec.options.bootstrap, "health": {"windowSeconds": 0}}
        if spec.strategy == "B":
            resource["groups"] = spec.groups()
        if spec.strategy == "E":
            resource["connect"] = {"url": spec.options.connect_url,
                                   "connectors": {c: spec.connector(c) for c in COLORS}}
        return resource

    def stop(self) -> None:
        """The controller (SIGTERM: it releases its Lease), the run's namespace on a given API server, our own API
        server. Idempotent; failures are logged, not raised (the run's verdict does not depend on them)."""
        if self._controller is not None:
            stop_controller(self._controller)
        if self._client is not None:
            if self._namespace_created and self._own is None:
                try:
                    self._client.delete(Namespace, self.namespace)
                except KUBE_ERRORS as exc:
                    log.warning("Deleting namespace %s: %s", self.namespace, describe(exc))
            self._client.close()
            self._client = None
        if self._own is not None:
            self._own.down()
            self._own = None

    def environment(self) -> dict[str, Any]:
        """What the run record's environment says about the driver."""
        return {"driver": "kubernetes", "kube_apiserver": self.version or "unknown", "kubernetes_api": self.api_where}

    def conditions(self) -> dict[str, Any]:
        return {"consumer_deployment": f"{self.namespace}/{self.name}", "controller_log": str(self.controller_log)}


class KubernetesSwitcher:
    """Requests switches through the ConsumerDeployment and waits for the controller's outcome."""

    def __init__(self, client: Client, namespace: str, name: str, controller: subprocess.Popen[bytes],
                 controller_log: Path) -> None:
        self._client = client
        self._namespace = namespace
        self._name = name
        self._controller = controller
        self._controller_log = controller_log

    def switch(self, strategy: str, to_color: str, health: HealthCheck | None = None,
               action: str = "switch") -> SwitchResult:
        """Patch ``spec.activeColor`` (and ``spec.health``), wait for the controller to finish, return its result
        as it reported it; ``SwitchError`` when the API server fails or the controller does not finish."""
        requested = time.time()
        try:
            patched = self._client.patch(ConsumerDeployment, self._name, {"spec": {
                "activeColor": to_color, "health": _health_spec(health)}}, namespace=self._namespace,
                patch_type=PatchType.MERGE)
            generation = int(patched.metadata.generation or 0) if patched.metadata else 0
            status = self.wait_settled(generation, SWITCH_TIMEOUT_S)
            status = self._wait_gap(status, generation)
        except KUBE_ERRORS as exc:
            raise SwitchError(f"the Kubernetes API server: {describe(exc)}") from exc
        last = status.get("lastSwitch")
        if not isinstance(last, dict) or last.get("to") != to_color or last.get("strategy") != strategy:
            raise SwitchError(f"the controller finished generation {generation} ({status.get('phase')}) without a "
                              f"switch to {to_color} by {strategy}: lastSwitch {last!r}")
        return _result(last, action, int(status.get("generation") or 0), requested)

    def _wait_gap(self, status: dict[str, Any], generation: int) -> dict[str, Any]:
        """The status once the controller's gap estimate of the switch is in (it writes the outcome first and the
        gap when the new color handles its first record, within the sampler's bound); as it is after that bound."""
        deadline = time.monotonic() + GAP_BOUND_S + 10.0
        while (status.get("lastSwitch") or {}).get("processingGapNote") == GAP_BEING_MEASURED \
                and time.monotonic() < deadline:
            time.sleep(POLL_S)
            status = self.wait_settled(generation, SWITCH_TIMEOUT_S)
        return status

    def wait_settled(self, generation: int, timeout_s: float) -> dict[str, Any]:
        """The resource's status once the controller observed ``generation`` and is in a final phase."""
        deadline = time.monotonic() + timeout_s
        while True:
            resource = self._client.get(ConsumerDeployment, self._name, namespace=self._namespace)
            status: dict[str, Any] = dict(resource.get("status") or {})
            if int(status.get("observedGeneration") or 0) >= generation and status.get("phase") in FINAL_PHASES:
                return status
            if self._controller.poll() is not None:
                raise SwitchError(f"the controller exited with {self._controller.returncode}; see "
                                  f"{self._controller_log}")
            if time.monotonic() > deadline:
                raise SwitchError(f"the controller did not finish generation {generation} of {self._name} within "
                                  f"{timeout_s:g}s (phase {status.get('phase')!r}); see {self._controller_log}")
            time.sleep(POLL_S)


def _health_spec(health: HealthCheck | None) -> dict[str, float]:
    if health is None:
        return {"windowSeconds": 0}
    return {"windowSeconds": health.window_s, "maxErrorRate": health.max_error_rate,
            "readyTimeoutSeconds": health.ready_timeout_s}


def _result(last: dict[str, Any], action: str, generation: int, requested: float) -> KubernetesSwitchResult:
    """``status.lastSwitch`` as a result; the runner's own action (a switch back to blue is its rollback), its
    request time as the start (the status has whole seconds only) and the steps placed one after the other."""
    steps: list[Step] = []
    at = requested
    for entry in last.get("steps") or []:
        seconds = float(entry.get("seconds") or 0.0)
        steps.append(Step(str(entry.get("name")), at, seconds, bool(entry.get("ok")), str(entry.get("detail") or "")))
        at += seconds
    gap = last.get("processingGapSeconds")
    return KubernetesSwitchResult(
        strategy=str(last.get("strategy")), action=action, from_color=str(last.get("from")),
        to_color=str(last.get("to")), generation=generation, started_at=requested,
        seconds=float(last.get("seconds") or 0.0), ok=bool(last.get("ok")), rolled_back=bool(last.get("rolledBack")),
        error=last.get("error"), steps=steps, controller_gap_s=None if gap is None else float(gap),
        controller_gap_note=last.get("processingGapNote"))
