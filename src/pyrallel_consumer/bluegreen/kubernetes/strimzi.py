"""Strategy E under Strimzi: a connector's target state is ``spec.state`` of its ``KafkaConnector``.

The Strimzi operator reconciles each connector from its KafkaConnector, so a connector stopped only through Kafka
Connect's REST API would be started again at the operator's next reconciliation (both colors' connectors running).
The reconciler sets ``Deployment.connector_state`` to ``StrimziConnectorState`` for strategy E; the switch calls
it (on the switch's worker thread) before each REST stop or resume. A connector without a KafkaConnector (no
Strimzi, or a name it does not know), or that the controller may not patch (403: the chart grants it only with
``strimzi.enabled``), is left to the REST API alone. Both Strimzi API versions are tried, ``v1`` first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from pyrallel_consumer.bluegreen.controller import SwitchError
from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS, describe, is_status

log = logging.getLogger(__name__)

KAFKA_CONNECTORS = [create_namespaced_resource("kafka.strimzi.io", version, "KafkaConnector", "kafkaconnectors")
                    for version in ("v1", "v1beta2")]


class StrimziConnectorState:
    def __init__(self, client_factory: Callable[[], Client], namespace: str) -> None:
        self._client_factory = client_factory
        self._namespace = namespace

    def __call__(self, connector: str, state: str) -> None:
        client = self._client_factory()
        try:
            for resource in KAFKA_CONNECTORS:
                try:
                    client.patch(resource, connector, {"spec": {"state": state}}, namespace=self._namespace,
                                 patch_type=PatchType.MERGE)
                except httpx2.HTTPStatusError as exc:
                    if is_status(exc, 404):
                        continue  # this version is not served, or no such KafkaConnector
                    if is_status(exc, 403):
                        log.debug("May not patch KafkaConnector %s; REST API only", connector)
                        return
                    raise SwitchError(f"KafkaConnector {connector}: spec.state={state}: {describe(exc)}") from exc
                log.info("KafkaConnector %s: spec.state=%s", connector, state)
                return
        except KUBE_ERRORS as exc:
            raise SwitchError(f"KafkaConnector {connector}: spec.state={state}: {describe(exc)}") from exc
        finally:
            client.close()
