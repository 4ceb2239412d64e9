"""Kubernetes Events about a ``ConsumerDeployment`` (``kubectl describe cdep NAME`` and ``kubectl get events``
show them), best effort: a refused or failed Event is logged at DEBUG and never stops the controller.

Called by the reconciler on whichever of its threads noticed what happened (the loop, the elector); every call
makes its own short-lived client, so it is safe from any thread.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from lightkube import Client
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS, describe
from pyrallel_consumer.bluegreen.kubernetes.resource import API_VERSION, KIND

log = logging.getLogger(__name__)

COMPONENT = "pyrallel-controller"


class EventRecorder:
    def __init__(self, client_factory: Callable[[], Client], namespace: str, deployment: str,
                 instance: str) -> None:
        self._client_factory = client_factory
        self._namespace = namespace
        self._deployment = deployment
        self._instance = instance
        self.uid: str | None = None
        """The resource's uid once known (an Event names the object it is about by it too)."""

    def emit(self, reason: str, message: str, warning: bool = False) -> None:
        now = datetime.now(UTC)
        event = Event(
            metadata=ObjectMeta(name=f"{self._deployment}.{uuid.uuid4().hex[:16]}", namespace=self._namespace),
            involvedObject=ObjectReference(apiVersion=API_VERSION, kind=KIND, name=self._deployment,
                                           namespace=self._namespace, uid=self.uid),
            reason=reason, message=message[:1024], type="Warning" if warning else "Normal",
            firstTimestamp=now, lastTimestamp=now, count=1,
            source=EventSource(component=COMPONENT, host=self._instance),
            reportingComponent=COMPONENT, reportingInstance=self._instance,
        )
        try:
            client = self._client_factory()
            try:
                client.create(event, namespace=self._namespace)
            finally:
                client.close()
        except KUBE_ERRORS as exc:
            log.debug("Event %s not recorded: %s", reason, describe(exc))
