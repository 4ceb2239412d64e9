"""A color's instances: the pods labelled ``pyrallel.io/deployment=<name>`` and ``pyrallel.io/color=<color>``.

Called by the reconciler (its loop thread, before every switch and every consistency pass) and by
``pyrallel controller health --kubernetes``. An instance is reachable at ``http://<status.podIP>:<port>``, the port
being the container port named ``control`` (``spec.controlPort`` of the resource is informational only: the pod
says which port its process listens on). Pods without an IP yet, or being deleted, or finished, are left out:
there is nothing to talk to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lightkube import Client
from lightkube.resources.core_v1 import Pod

from pyrallel_consumer.bluegreen.controller import COLORS
from pyrallel_consumer.bluegreen.kubernetes.resource import COLOR_LABEL, DEPLOYMENT_LABEL

log = logging.getLogger(__name__)

CONTROL_PORT_NAME = "control"


@dataclass(frozen=True, slots=True)
class PodInstance:
    name: str
    color: str
    url: str


def control_url(pod: Pod) -> str | None:
    """``http://<podIP>:<control port>``, or None while the pod has no IP or names no ``control`` port."""
    ip = pod.status.podIP if pod.status else None
    if not ip or pod.spec is None:
        return None
    for container in pod.spec.containers:
        for port in container.ports or []:
            if port.name == CONTROL_PORT_NAME:
                host = f"[{ip}]" if ":" in ip else ip
                return f"http://{host}:{port.containerPort}"
    return None


def list_instances(client: Client, namespace: str, deployment: str) -> list[PodInstance]:
    """The deployment's reachable pods of both colors, sorted by name."""
    found: list[PodInstance] = []
    for pod in client.list(Pod, namespace=namespace, labels={DEPLOYMENT_LABEL: deployment}):
        meta = pod.metadata
        if meta is None or meta.name is None or meta.deletionTimestamp is not None:
            continue
        if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
            continue
        color = (meta.labels or {}).get(COLOR_LABEL)
        if color not in COLORS:
            log.warning("Pod %s has no %s label of blue or green; ignored", meta.name, COLOR_LABEL)
            continue
        url = control_url(pod)
        if url is None:
            log.debug("Pod %s has no IP or no container port named %s yet", meta.name, CONTROL_PORT_NAME)
            continue
        found.append(PodInstance(meta.name, color, url))
    return sorted(found, key=lambda p: p.name)


def urls_by_color(instances: list[PodInstance]) -> dict[str, list[str]]:
    return {color: [p.url for p in instances if p.color == color] for color in COLORS}
