"""Consumers as local processes that the Kubernetes controller sees as pods, and the controller as a local process.

There is no kubelet next to the local API server (:mod:`.apiserver`), so nothing runs a Pod object. A consumer is a
local ``pyrallel consume`` process instead, represented by a Pod object labelled like a color's pod of the Helm chart
(``pyrallel.io/deployment``, ``pyrallel.io/color``), whose container port named ``control`` is the process's control
port and whose ``status.podIP`` (written through the pods/status subresource, as a kubelet would) is 127.0.0.1: the
controller reaches the process at ``http://127.0.0.1:<port>``. The controller itself is a ``pyrallel controller serve
--kubernetes`` subprocess.

Used by the scenario runner's Kubernetes driver (:mod:`pyrallel_tools.bluegreen.kube_driver`) and the Kubernetes
controller's tests, on the caller's thread. The ConsumerDeployment CRD comes from the Helm chart's ``crds/`` folder,
its one source.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client, KubeConfig
from lightkube.config.client_adapter import Client as HttpClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.models.core_v1 import Container, ContainerPort, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from pyrallel_consumer.bluegreen.kubernetes.pods import CONTROL_PORT_NAME
from pyrallel_consumer.bluegreen.kubernetes.resource import COLOR_LABEL, DEPLOYMENT_LABEL
from pyrallel_tools.localkafka.errors import LocalKafkaError

CRD_IN_REPO = Path("deploy/helm/pyrallel-consumer/crds/consumerdeployments.yaml")
"""The ConsumerDeployment CRD, relative to the repository's root."""
CONTAINER = "consumer"
IMAGE = "example/consumer:local-process"
"""What the Pod objects name as image: informational, nothing pulls it."""


def consumer_deployment_crd_path() -> Path:
    """The chart's CRD file: looked for above this module (a source checkout, installed editable) and above the
    working directory; :class:`LocalKafkaError` saying where it looked when it is in neither."""
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / CRD_IN_REPO
            if candidate.is_file():
                return candidate
    raise LocalKafkaError(f"the ConsumerDeployment CRD ({CRD_IN_REPO}) was not found above "
                          f"{' or '.join(str(s) for s in starts)}: run from a checkout of the repository (the Helm "
                          f"chart's crds/ folder is its only source)")


def consumer_deployment_crd() -> dict[str, Any]:
    """The ConsumerDeployment CustomResourceDefinition document, for :func:`.apiserver.install_crds`."""
    path = consumer_deployment_crd_path()
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
        raise LocalKafkaError(f"{path} is not a CustomResourceDefinition")
    return document


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A Pod object standing for one local consumer process of ``deployment``'s ``color``."""

    namespace: str
    deployment: str
    color: str
    name: str
    port: int

    def create(self, client: Client) -> None:
        """Create the Pod object and report it running, as a kubelet would once the process is up."""
        labels = {DEPLOYMENT_LABEL: self.deployment, COLOR_LABEL: self.color}
        pod = Pod(metadata=ObjectMeta(name=self.name, namespace=self.namespace, labels=labels),
                  spec=PodSpec(containers=[Container(name=CONTAINER, image=IMAGE, ports=[
                      ContainerPort(containerPort=self.port, name=CONTROL_PORT_NAME)])]))
        client.create(pod, namespace=self.namespace)
        self.report_running(client, restarts=0)

    def report_running(self, client: Client, restarts: int) -> None:
        """What a kubelet writes: the pod's IP, Running, and the container's restart count."""
        client.patch(Pod.Status, self.name, {"status": {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "containerStatuses": [{"name": CONTAINER, "image": IMAGE, "imageID": "", "ready": True,
                                   "restartCount": restarts, "state": {"running": {}}}],
        }}, namespace=self.namespace, patch_type=PatchType.MERGE)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """The controller's Lease timings and resync period (``serve --kubernetes`` options), in seconds."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    resync_s: float = 5.0


def start_controller(kubeconfig: Path, namespace: str, deployment: str, identity: str, log_path: Path,
                     lease: LeaseSettings | None = None) -> subprocess.Popen[bytes]:
    """``pyrallel --log-format json controller serve --kubernetes`` for ``deployment``, its log (JSON lines, stable
    keys) appended to ``log_path``; it stands by for the Lease and then reconciles until SIGTERM."""
    lease = lease or LeaseSettings()
    cmd = [sys.executable, "-m", "pyrallel_tools.cli", "--log-format", "json", "controller", "serve", "--kubernetes",
           "--deployment", deployment, "--namespace", namespace, "--kubeconfig", str(kubeconfig),
           "--identity", identity, "--lease-duration", str(lease.lease_duration_s),
           "--renew-deadline", str(lease.renew_deadline_s), "--retry-period", str(lease.retry_period_s),
           "--resync", str(lease.resync_s)]
    with log_path.open("ab") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)


def stop_controller(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (the controller releases its Lease), SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def server_version(kubeconfig: Path) -> str | None:
    """The API server's ``gitVersion`` (``GET /version``), None when it does not say."""
    config = KubeConfig.from_file(kubeconfig).get()
    if config is None:
        raise LocalKafkaError(f"{kubeconfig} has no current context")
    with HttpClient(config, ConnectionParams()) as http:
        answer = http.get("/version")
        answer.raise_for_status()
        version = answer.json().get("gitVersion")
    return str(version) if version else None
