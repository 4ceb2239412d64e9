"""Configuration: clear errors naming the field, env vars, secrets kept out of sight, docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrallel_consumer import ConfigError, ConsumerConfig, Ordering
from pyrallel_consumer.config_reference import reference_markdown

pytestmark = pytest.mark.unit

BASE = {"bootstrap_servers": "127.0.0.1:9092", "group_id": "g", "topics": ["orders"]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight: Input should be greater than or equal to 1"),
        ({"topics": ["bad topic"]}, "topics: 'bad topic' is not a valid Kafka topic name"),
        ({"topics": []}, "topics: List should have at least 1 item"),
        ({"topics": ["a", "a"]}, "a topic is listed twice"),
        ({"kafka": {"enable.auto.commit": "true"}}, "'enable.auto.commit' is set by the library"),
        ({"kafka": {"enable.auto.offset.store": "true"}}, "'enable.auto.offset.store' is set by the library"),
        ({"kafka": {"isolation.level": "read_commited"}}, "'isolation.level' must be one of read_committed"),
        ({"kafka": {"partition.assignment.strategy": "range"}}, "cooperative-sticky"),
        ({"ordering": "random"}, "ordering: Input should be 'key', 'partition' or 'unordered'"),
        ({"retry_backoff_ms": 500, "max_retry_backoff_ms": 100}, "max_retry_backoff_ms must be >= retry_backoff_ms"),
        ({"dlq_topic": "no spaces"}, "dlq_topic: 'no spaces' is not a valid Kafka topic name"),
        ({"max_inflight": 5}, "unknown field(s) max_inflight"),
        ({"group_protocol": "consumer", "kafka": {"session.timeout.ms": "6000"}}, "set by the broker"),
        ({"control_host": ""}, "control_host: String should have at least 1 character"),
        ({"control_token": ""}, "control_token: Value should have at least 1 item"),
        ({"dlq_kafka": {"acks": "0"}}, "'acks' is set by the library"),
        ({"dlq_kafka": {"enable.idempotence": "false"}}, "'enable.idempotence' is set by the library"),
        ({"dlq_topic": "orders"}, "dlq_topic 'orders' is a consumed topic"),
        ({"commit_min_interval_ms": 2000}, "commit_min_interval_ms (2000) must be at most commit_interval_ms (1000)"),
    ],
)
def test_bad_values_name_the_field(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConsumerConfig(**{**BASE, **override})
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_required_fields_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOOTSTRAP_SERVERS", "GROUP_ID", "TOPICS"):
        monkeypatch.delenv(f"PYRALLEL_{name}", raising=False)
    with pytest.raises(ConfigError, match="bootstrap_servers: Field required; group_id: Field required"):
        ConsumerConfig()


def test_environment_variables_fill_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRALLEL_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PYRALLEL_GROUP_ID", "from-env")
    monkeypatch.setenv("PYRALLEL_TOPICS", "a, b")
    monkeypatch.setenv("PYRALLEL_ORDERING", "partition")
    monkeypatch.setenv("PYRALLEL_KAFKA", '{"fetch.min.bytes": "1"}')
    config = ConsumerConfig()
    assert (config.group_id, config.topics, config.ordering) == ("from-env", ["a", "b"], Ordering.PARTITION)
    assert config.kafka == {"fetch.min.bytes": "1"}


def test_environment_value_that_is_not_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRALLEL_KAFKA", "fetch.min.bytes=1")
    with pytest.raises(ConfigError, match="from the environment"):
        ConsumerConfig(**BASE)


def test_secrets_are_masked_and_never_echoed() -> None:
    config = ConsumerConfig(**BASE, kafka={"sasl.password": "hunter2"}, control_token="tok3n")
    assert "hunter2" not in repr(config)
    assert "tok3n" not in repr(config)
    with pytest.raises(ConfigError) as caught:
        ConsumerConfig(**BASE, kafka={"sasl.password": "hunter2", "enable.auto.commit": "true"})
    assert "hunter2" not in str(caught.value)


def test_documentation_table_matches_the_model() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert reference_markdown() in doc, "run: pyrallel config-reference, and paste it into docs/configuration.md"


@pytest.mark.parametrize("ordering", ["key", "partition"])
def test_a_share_group_refuses_an_order_it_cannot_keep(ordering: str) -> None:
    with pytest.raises(ConfigError, match=r"group_type='share' gives no order.*set ordering='unordered'"):
        ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], group_type="share", ordering=ordering)


def test_a_share_group_refuses_exactly_once() -> None:
    with pytest.raises(ConfigError, match="exactly_once' is not available"):
        ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], group_type="share",
                       ordering="unordered", processing_guarantee="exactly_once")


def test_a_share_group_refuses_to_hold_its_partitions_while_paused() -> None:
    with pytest.raises(ConfigError, match=r"pauses by leaving the group.*pause_mode='hold' is not available"):
        ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], group_type="share",
                       ordering="unordered", pause_mode="hold")



@pytest.mark.parametrize(("kafka", "refusal"), [
    ({"share.acknowledgement.mode": "implicit"}, "'share.acknowledgement.mode' is set by the library for share groups"),
    ({"max.poll.records": "500"}, "'max.poll.records' is set by the library for share groups: use max_in_flight"),
    ({"auto.offset.reset": "latest"}, "librdkafka refuses 'auto.offset.reset'.*not applicable for share consumer"),
    ({"session.timeout.ms": "6000"}, "librdkafka refuses 'session.timeout.ms'"),
])
def test_a_share_group_owns_its_acknowledgement_and_refuses_consumer_group_properties(
        kafka: dict[str, str], refusal: str) -> None:
    with pytest.raises(ConfigError, match=refusal):
        ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], group_type="share",
                       ordering="unordered", kafka=kafka)


def test_a_share_group_takes_share_consumer_properties() -> None:
    config = ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], group_type="share",
                            ordering="unordered", kafka={"fetch.wait.max.ms": "50"})
    assert config.kafka == {"fetch.wait.max.ms": "50"}
