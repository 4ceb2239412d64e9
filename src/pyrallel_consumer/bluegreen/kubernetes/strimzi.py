"""Strategy E under Strimzi: a connector's target state is ``spec.state`` of its ``KafkaConnector``.

The Strimzi operator reconciles each connector from its KafkaConnector, so a connector stopped only through Kafka
Connect's REST API would be started again at the operator's next reconciliation (both colors' connectors running).
The reconciler sets ``Deployment.connector_state`` to ``StrimziConnectorState`` for strategy E; the switch calls
it (on the switch's worker thread) before each REST stop or resume. Both Strimzi API versions are tried, ``v1``
first. Outcomes:

* patched: logged at INFO, the REST call follows;
* no KafkaConnector of that name (404 in every version): logged at INFO, the REST API alone switches it;
* a KafkaConnector that exists but may not be patched (403 on the patch, the GET answers): ``SwitchError``, the
  step fails (the operator would undo a REST-only change);
* KafkaConnectors not even readable (403 on the GET too: the chart grants get/patch only with
  ``strimzi.enabled``): nothing can tell whether Strimzi owns the connector; logged at WARNING, REST alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

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
                        found = self._look_up(client, resource, connector)
                        if found == "absent":
                            continue
                        if found == "unreadable":
                            return
                    raise SwitchError(f"KafkaConnector {connector}: cannot set spec.state={state}: {describe(exc)}"
                                      + (" (the controller's Role needs patch on kafkaconnectors: "
                                         "strimzi.enabled in the chart)" if is_status(exc, 403) else "")) from exc
                log.info("KafkaConnector %s: spec.state=%s", connector, state)
                return
            log.info("No KafkaConnector %s in %s: connector %s is switched through the REST API alone", connector,
                     self._namespace, connector)
        except KUBE_ERRORS as exc:
            raise SwitchError(f"KafkaConnector {connector}: spec.state={state}: {describe(exc)}") from exc
        finally:
            client.close()

    def _look_up(self, client: Client, resource: type[Any], connector: str) -> str:
        """After a 403 on the patch: ``present`` (readable: the caller fails the step), ``absent`` (404: none of this
        version) or ``unreadable`` (403 again: logged, the REST API alone)."""
        try:
            client.get(resource, connector, namespace=self._namespace)
        except httpx2.HTTPStatusError as exc:
            if is_status(exc, 404):
                return "absent"
            if is_status(exc, 403):
                log.warning("May neither read nor patch KafkaConnector %s in %s: switching connector %s through "
                            "the REST API alone (if Strimzi manages it, grant get/patch on kafkaconnectors)",
                            connector, self._namespace, connector)
                return "unreadable"
            raise
        return "present"
