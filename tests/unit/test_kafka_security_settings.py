"""Security settings reach every Kafka client the library creates: the consumer, the topic check's admin client,
the dead-letter producer, and the blue/green controller's writer, reader and hand-over admin client.

A client that misses one (it verifies a certificate the consumer was told not to, or speaks PLAINTEXT to a SASL_SSL
listener) fails where the consumer gets in: the topic check refuses start, dead letters never arrive, a switch
cannot read or write the active color."""

from __future__ import annotations

from typing import Any

import pytest

from pyrallel_consumer import ConsumerConfig
from pyrallel_consumer.bluegreen import active_color, controller
from pyrallel_consumer.bluegreen.controller import Deployment, SwitchController
from pyrallel_consumer.kafka.settings import admin_conf, dead_letter_conf, kafka_conf

pytestmark = pytest.mark.unit

SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "app",
    "sasl.password": "secret",
    "ssl.endpoint.identification.algorithm": "none",
    "enable.ssl.certificate.verification": "false",
    "enable.sasl.oauthbearer.unsecure.jwt": "false",
    "https.ca.pem": "-----BEGIN CERTIFICATE-----",
}
"""Every kind of security property: the prefixed ones and those without security./sasl./ssl. in front."""


def _config(**extra: Any) -> ConsumerConfig:
    return ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], **extra)


def test_every_security_property_in_kafka_reaches_the_consumer_the_admin_client_and_the_dlq_producer() -> None:
    config = _config(kafka={**SECURITY, "session.timeout.ms": "7000"})
    for name, conf in (("consumer", kafka_conf(config)), ("topic check admin", admin_conf(config)),
                       ("dead-letter producer", dead_letter_conf(config))):
        missing = {k for k, v in SECURITY.items() if conf.get(k) != v}
        assert not missing, f"the {name} lacks {sorted(missing)}"
    assert "session.timeout.ms" not in admin_conf(config) and "session.timeout.ms" not in dead_letter_conf(config)


def test_dlq_kafka_still_overrides_the_shared_security_settings() -> None:
    """A dead-letter topic on another cluster takes its own credentials."""
    config = _config(kafka=SECURITY, dlq_kafka={"sasl.username": "dlq-writer", "sasl.password": "other"})
    conf = dead_letter_conf(config)
    assert (conf["sasl.username"], conf["sasl.password"]) == ("dlq-writer", "other")
    assert conf["security.protocol"] == "SASL_SSL" and conf["enable.ssl.certificate.verification"] == "false"


class _RecordedError(Exception):
    """Stops a fake client once its configuration is recorded."""


def test_the_switch_controller_gives_the_deployments_kafka_properties_to_each_of_its_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confs: dict[str, dict[str, Any]] = {}

    class Admin:
        def __init__(self, conf: dict[str, Any]) -> None:
            confs.setdefault("control topic admin", conf)

        def list_topics(self, timeout: float) -> Any:
            return type("Meta", (), {"topics": {active_color.CONTROL_TOPIC: object()}})()

    class TransactionalProducer:
        def __init__(self, conf: dict[str, Any]) -> None:
            confs["active-color writer"] = conf

        def init_transactions(self, timeout: float) -> None:
            return None

    class Reader:
        def __init__(self, conf: dict[str, Any]) -> None:
            confs["active-color reader"] = conf

        def list_topics(self, topic: str, timeout: float) -> Any:
            raise _RecordedError

        def close(self) -> None:
            return None

    class HandOverAdmin:
        def __init__(self, conf: dict[str, Any]) -> None:
            confs["hand-over admin"] = conf

        def list_consumer_group_offsets(self, *args: Any, **kwargs: Any) -> Any:
            raise _RecordedError

    monkeypatch.setattr(active_color, "AdminClient", Admin)
    monkeypatch.setattr(active_color, "Producer", TransactionalProducer)
    monkeypatch.setattr(active_color, "Consumer", Reader)
    monkeypatch.setattr(controller, "AdminClient", HandOverAdmin)
    deployment = Deployment("dep", "b:9093", {"blue": [], "green": []}, groups={"blue": "gb", "green": "gg"},
                            kafka=dict(SECURITY))
    switch = SwitchController(deployment, "c1")
    with pytest.raises(_RecordedError):
        switch.current()
    with pytest.raises(_RecordedError):
        switch._group_positions("gb", "gg", write=False)
    assert set(confs) == {"control topic admin", "active-color writer", "active-color reader", "hand-over admin"}
    for name, conf in confs.items():
        missing = {k for k, v in SECURITY.items() if conf.get(k) != v}
        assert not missing, f"the {name} lacks {sorted(missing)}"
        assert conf["bootstrap.servers"] == "b:9093"
    writer = confs["active-color writer"]
    assert (writer["transactional.id"], writer["acks"]) == ("pyrallel-bg-controller-c1", "all")
    assert confs["active-color reader"]["isolation.level"] == "read_committed"


def test_the_fencing_and_reading_settings_stay_the_controllers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Deployment.kafka`` carries what the cluster asks of a client; it cannot turn the fencing off."""
    confs: list[dict[str, Any]] = []

    class Producer:
        def __init__(self, conf: dict[str, Any]) -> None:
            confs.append(conf)

        def init_transactions(self, timeout: float) -> None:
            return None

    monkeypatch.setattr(active_color, "Producer", Producer)
    monkeypatch.setattr(active_color, "ensure_control_topic", lambda *args: None)
    active_color.ActiveColorWriter("b:1", "c2", kafka={"transactional.id": "x", "acks": "1",
                                                       "bootstrap.servers": "elsewhere:1"})
    assert (confs[0]["transactional.id"], confs[0]["acks"], confs[0]["enable.idempotence"]) == (
        "pyrallel-bg-controller-c2", "all", True)
    assert confs[0]["bootstrap.servers"] == "b:1"
