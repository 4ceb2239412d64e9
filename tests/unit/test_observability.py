"""JSON log lines, logging setup, and the Prometheus exporter's hooks, scrape-time state and HTTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pyrallel_consumer import ConfigError, ConsumerConfig, MetricsSnapshot, PartitionMetrics, PyrallelConsumer
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.kafka.settings import admin_conf, dead_letter_conf, kafka_conf, transactional_conf
from pyrallel_consumer.observability import metrics
from pyrallel_consumer.observability.librdkafka_log import LIBRDKAFKA_LOGGER, LibrdkafkaLog
from pyrallel_consumer.observability.logging import JsonFormatter, configure_logging
from pyrallel_consumer.observability.metrics import PrometheusExporter

pytestmark = pytest.mark.unit


def config(**extra: Any) -> ConsumerConfig:
    values: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:1", "group_id": "g", "topics": ["orders"],
                              "color": "blue", "instance_id": "blue-1", "max_in_flight": 64}
    values.update(extra)
    return ConsumerConfig(**values)


def partition(number: int, **fields: Any) -> PartitionMetrics:
    values: dict[str, Any] = {f.name: 0 for f in dataclasses.fields(PartitionMetrics)}
    values.update(topic="orders", partition=number, committed_offset=100, high_watermark=130, true_lag=12,
                  incomplete=12, blocking_offset=101, blocking_age_s=4.5, metadata_bytes=40)
    values.update(fields)
    return PartitionMetrics(**values)


def snapshot(*partitions: PartitionMetrics) -> MetricsSnapshot:
    """A snapshot with these gauges; the counters it also carries (whatever they are) are 0."""
    counters = {f.name: 0 for f in dataclasses.fields(MetricsSnapshot) if f.default is dataclasses.MISSING}
    return MetricsSnapshot(**{**counters, "partitions": partitions, "in_flight": 9, "queued": 3,
                              "paused_partitions": 1})


def sample(exporter: PrometheusExporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


async def _no_handler(_record: object) -> None:
    return None


# ---- JSON formatter and configure_logging ----------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pyrallel_consumer.test_json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_the_standard_fields_and_the_structured_extras(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    fields = {"topic": "orders", "partition": 3, "offset": 42, "color": "blue", "instance": "blue-1", "generation": 7}
    logger.warning("Committed %s[%d]@%d\nsecond line", "orders", 3, 42, extra=fields)
    [entry] = lines(stream)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "pyrallel_consumer.test_json"
    assert entry["message"] == "Committed orders[3]@42\nsecond line"
    assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None, "ts is ISO 8601 with a zone"
    assert {k: entry[k] for k in fields} == fields
    assert set(entry) == {"ts", "level", "logger", "message", *fields}, "no LogRecord internals leak out"
    assert stream.getvalue().count("\n") == 1, "a multi-line message stays one line"


def test_json_line_carries_the_traceback_and_never_fails_on_odd_values(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("Handler failed", extra={"key": b"k1", "level": "not mine", "offsets": {3}})
    [entry] = lines(stream)
    assert entry["level"] == "ERROR", "an extra never overwrites a standard field"
    assert "ValueError: boom" in entry["exc_info"]
    assert entry["key"] == "b'k1'"
    assert entry["offsets"] == "{3}"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (configure_logging changes process-wide state)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_replaces_the_console_handler_and_keeps_the_others(root_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    kept = logging.FileHandler("/dev/null")
    root_logger.addHandler(kept)
    root_logger.addHandler(logging.StreamHandler(first))  # what logging.basicConfig installs
    handler = configure_logging("json", "DEBUG", stream=second)
    logging.getLogger("pyrallel_consumer.test").debug("Assigned %d partition(s)", 2, extra={"generation": 3})
    assert first.getvalue() == "", "the earlier console handler is gone: no line is printed twice"
    [entry] = lines(second)
    assert (entry["message"], entry["generation"], entry["level"]) == ("Assigned 2 partition(s)", 3, "DEBUG")
    assert kept in root_logger.handlers and handler in root_logger.handlers
    assert root_logger.level == logging.DEBUG

    third = io.StringIO()
    configure_logging("text", logging.INFO, stream=third)
    logging.getLogger("pyrallel_consumer.test").info("plain")
    assert second.getvalue().count("\n") == 1, "calling again replaces the JSON handler"
    assert third.getvalue().rstrip().endswith("INFO pyrallel_consumer.test: plain")
    kept.close()


def test_configure_logging_rejects_an_unknown_format(root_logger: logging.Logger) -> None:
    with pytest.raises(ValueError, match="log_format"):
        configure_logging("xml")  # type: ignore[arg-type]


REFUSED = ("[thrd:127.0.0.1:1/bootstrap]: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state "
           "CONNECT)")


@pytest.fixture
def librdkafka_lines() -> Iterator[tuple[LibrdkafkaLog, list[float], list[logging.LogRecord]]]:
    """A LibrdkafkaLog on a clock the test moves (1 s windows, 5 lines each), and the records it emitted."""
    clock = [100.0]
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    forwarder = LibrdkafkaLog("pyrallel_consumer.kafka.librdkafka.test", window_s=1.0, clock=lambda: clock[0])
    handler = Keep()
    forwarder.logger.addHandler(handler)
    forwarder.logger.setLevel(logging.DEBUG)
    yield forwarder, clock, records
    forwarder.logger.removeHandler(handler)
    forwarder.logger.setLevel(logging.NOTSET)


def test_librdkafka_lines_pass_a_few_per_kind_and_window_then_one_count(
    librdkafka_lines: tuple[LibrdkafkaLog, list[float], list[logging.LogRecord]],
) -> None:
    """A broker that refuses connections makes librdkafka report a failure every 50 ms, for as long as it is away."""
    forwarder, clock, records = librdkafka_lines
    for _ in range(50):  # as confluent-kafka calls it: level already mapped, facility, client name, text
        forwarder.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", REFUSED)
        forwarder.log(logging.DEBUG, "%s [%s] %s", "BROKER", "rdkafka#consumer-1", "debug lines always pass")
        clock[0] += 0.01
    forwarder.log(logging.WARNING, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "another level: another kind")
    clock[0] += 0.6  # the 1 s window of the first FAIL line is over
    forwarder.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", REFUSED)

    failures = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert failures[:4] == [f"FAIL [rdkafka#consumer-1] {REFUSED}"] * 4
    assert failures[4] == f"FAIL [rdkafka#consumer-1] {REFUSED} (similar lines held back for up to 1 s)"
    assert failures[5:] == ["FAIL [rdkafka#consumer-1] suppressed 45 similar lines in the previous 1 s window",
                            f"FAIL [rdkafka#consumer-1] {REFUSED}"]
    assert [r.getMessage() for r in records if r.levelno == logging.WARNING] == [
        "FAIL [rdkafka#consumer-1] another level: another kind"]
    assert len([r for r in records if r.levelno == logging.DEBUG]) == 50


def test_a_transaction_coordinator_still_loading_is_information_other_pid_failures_stay_warnings(
    librdkafka_lines: tuple[LibrdkafkaLog, list[float], list[logging.LogRecord]],
) -> None:
    """The first transactional producer on a fresh broker waits for __transaction_state to load (the demo's first
    line was librdkafka's WARNING about it)."""
    forwarder, _clock, records = librdkafka_lines
    loading = ("Failed to acquire transactional PID from broker TxnCoordinator/1: Broker: Coordinator load in "
               "progress: retrying")
    refused = ("Failed to acquire transactional PID from broker TxnCoordinator/1: Broker: Transactional Id "
               "authorization failed: retrying")
    forwarder.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-3", loading)
    forwarder.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-3", refused)
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "GETPID [rdkafka#producer-3] the transaction coordinator is not ready yet (normal on a fresh "
                       f"broker, or while a coordinator moves); librdkafka retries: {loading}"),
        (logging.WARNING, f"GETPID [rdkafka#producer-3] {refused}"),
    ]


def test_every_client_of_the_library_logs_through_a_librdkafka_log_of_its_own() -> None:
    consumer_config = config(processing_guarantee="exactly_once")
    loggers = {role: conf["logger"] for role, conf in (
        ("consumer", kafka_conf(consumer_config)), ("admin", admin_conf(consumer_config)),
        ("dlq", dead_letter_conf(consumer_config)), ("transactions", transactional_conf(consumer_config)))}
    assert all(isinstance(forwarder, LibrdkafkaLog) for forwarder in loggers.values())
    assert {role: forwarder.logger.name for role, forwarder in loggers.items()} == {
        role: f"{LIBRDKAFKA_LOGGER}.{role}" for role in loggers}
    assert LIBRDKAFKA_LOGGER.startswith("pyrallel_consumer.kafka.")


def test_config_fields_of_metrics_and_logs_are_validated() -> None:
    default = config()
    assert (default.metrics_port, default.metrics_host, default.log_format) == (None, "127.0.0.1", "text")
    assert config(metrics_port=0, log_format="json").metrics_port == 0
    for bad in ({"metrics_port": -1}, {"metrics_port": 65536}, {"metrics_host": ""}, {"log_format": "xml"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            config(**bad)


# ---- exporter ----------------------------------------------------------------------------------------------


class Recorder(ConsumerObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def records_received(self, count: int) -> None:
        self.calls.append(("records_received", (count,)))

    def record_finished(self, outcome: str, duration_s: float, attempts: int) -> None:
        self.calls.append(("record_finished", (outcome, duration_s, attempts)))

    def commit_finished(self, latency_s: float, ok: bool) -> None:
        self.calls.append(("commit_finished", (latency_s, ok)))

    def batch_dispatched(self, records: int) -> None:
        self.calls.append(("batch_dispatched", (records,)))

    def commits_refused_in_rebalance(self, partitions: int) -> None:
        self.calls.append(("commits_refused_in_rebalance", (partitions,)))

    def rebalanced(self, kind: str, partitions: int) -> None:
        self.calls.append(("rebalanced", (kind, partitions)))

    def error(self, kind: str) -> None:
        self.calls.append(("error", (kind,)))

    def lifecycle_changed(self, state: str) -> None:
        self.calls.append(("lifecycle_changed", (state,)))


def test_observer_hooks_update_counters_histograms_and_are_chained() -> None:
    chained = Recorder()
    exporter = PrometheusExporter(config(), lambda: snapshot(), chained=chained)
    exporter.records_received(5)
    exporter.records_received(3)
    for outcome, duration in (("success", 0.002), ("success", 0.004), ("retried", 0.3), ("failed", 2.0),
                              ("dlq", 7.0)):
        exporter.record_finished(outcome, duration, 1)
    exporter.commit_finished(0.1, True)
    exporter.commit_finished(0.2, False)
    exporter.rebalanced("assign", 4)
    exporter.rebalanced("revoke", 2)
    exporter.error("commit")

    assert sample(exporter, "pyrallel_records_consumed_total") == 8
    assert [sample(exporter, "pyrallel_records_completed_total", outcome=o)
            for o in ("success", "retried", "failed", "dlq")] == [2, 1, 1, 1]
    assert sample(exporter, "pyrallel_handler_duration_seconds_count") == 5
    assert sample(exporter, "pyrallel_handler_duration_seconds_sum") == pytest.approx(9.306)
    assert sample(exporter, "pyrallel_handler_duration_seconds_bucket", le="0.005") == 2
    assert sample(exporter, "pyrallel_commit_latency_seconds_count") == 2
    assert sample(exporter, "kafka_consumer_commit_latency_avg") == pytest.approx(0.1 + 0.1 * (0.2 - 0.1))
    assert sample(exporter, "pyrallel_rebalances_total", kind="assign") == 1
    assert sample(exporter, "pyrallel_rebalances_total", kind="revoke") == 1
    assert sample(exporter, "pyrallel_rebalances_total", kind="lost") == 0, "every kind exists from the start"
    assert sample(exporter, "kafka_consumer_rebalance_count_total") == 2
    assert sample(exporter, "kafka_consumer_errors_total", kind="commit") == 1
    assert sample(exporter, "kafka_consumer_errors_total", kind="dlq") == 0
    assert [name for name, _ in chained.calls] == (
        ["records_received"] * 2 + ["record_finished"] * 5 + ["commit_finished"] * 2 + ["rebalanced"] * 2 + ["error"]
    )
    assert chained.calls[-4] == ("commit_finished", (0.2, False))


def test_commits_refused_in_a_rebalance_are_counted_apart_from_errors_and_chained() -> None:
    chained = Recorder()
    exporter = PrometheusExporter(config(), lambda: snapshot(), chained=chained)
    assert sample(exporter, "pyrallel_commit_rebalance_refusals_total") == 0
    exporter.commits_refused_in_rebalance(3)
    exporter.commits_refused_in_rebalance(2)
    assert sample(exporter, "pyrallel_commit_rebalance_refusals_total") == 5
    assert sample(exporter, "kafka_consumer_errors_total", kind="commit") == 0
    assert chained.calls == [("commits_refused_in_rebalance", (3,)), ("commits_refused_in_rebalance", (2,))]


def test_batches_are_counted_with_their_sizes_and_chained() -> None:
    chained = Recorder()
    exporter = PrometheusExporter(config(), lambda: snapshot(), chained=chained)
    assert sample(exporter, "pyrallel_batches_total") == 0
    for size in (100, 100, 7):
        exporter.batch_dispatched(size)

    assert sample(exporter, "pyrallel_batches_total") == 3
    assert sample(exporter, "pyrallel_batch_size_records_count") == 3
    assert sample(exporter, "pyrallel_batch_size_records_sum") == 207
    assert sample(exporter, "pyrallel_batch_size_records_bucket", le="10.0") == 1
    assert sample(exporter, "pyrallel_batch_size_records_bucket", le="100.0") == 3
    assert chained.calls == [("batch_dispatched", (100,)), ("batch_dispatched", (100,)), ("batch_dispatched", (7,))]


def test_lifecycle_state_is_one_for_the_current_state_and_zero_for_the_others() -> None:
    chained = Recorder()
    exporter = PrometheusExporter(config(), lambda: snapshot(), chained=chained)
    states = ("STARTING", "ACTIVE", "DRAINING", "PAUSED", "STOPPED")

    def values() -> list[float | None]:
        return [sample(exporter, "kafka_consumer_lifecycle_state", group="g", color="blue", instance="blue-1",
                       state=s) for s in states]

    assert values() == [1, 0, 0, 0, 0]
    exporter.lifecycle_changed("ACTIVE")
    assert values() == [0, 1, 0, 0, 0]
    exporter.lifecycle_changed("PAUSED")
    assert values() == [0, 0, 0, 1, 0]
    assert chained.calls == [("lifecycle_changed", ("ACTIVE",)), ("lifecycle_changed", ("PAUSED",))]


def test_state_gauges_are_read_from_the_snapshot_at_scrape_time() -> None:
    rows = [partition(0)]
    exporter = PrometheusExporter(config(), lambda: snapshot(*rows))
    assert sample(exporter, "pyrallel_true_lag", topic="orders", partition="0") == 12
    rows.append(partition(1, committed_offset=None, high_watermark=None, true_lag=None, blocking_age_s=0.0))
    expected = {"pyrallel_committed_offset": 100, "pyrallel_high_watermark": 130, "pyrallel_true_lag": 12,
                "pyrallel_incomplete_offsets": 12, "pyrallel_blocking_offset_age_seconds": 4.5,
                "pyrallel_commit_metadata_bytes": 40}
    for name, value in expected.items():
        assert sample(exporter, name, topic="orders", partition="0") == value, name
    for name in ("pyrallel_committed_offset", "pyrallel_high_watermark", "pyrallel_true_lag"):
        assert sample(exporter, name, topic="orders", partition="1") is None, f"{name}: unknown is left out"
    assert sample(exporter, "pyrallel_blocking_offset_age_seconds", topic="orders", partition="1") == 0
    assert [sample(exporter, n) for n in ("pyrallel_in_flight", "pyrallel_queued", "pyrallel_paused_partitions",
                                          "pyrallel_max_in_flight")] == [9, 3, 1, 64]


def test_every_consumer_has_its_own_registry_and_the_global_one_is_untouched() -> None:
    first = PyrallelConsumer(config(), _no_handler)
    second = PyrallelConsumer(config(instance_id="blue-2"), _no_handler)
    assert first.metrics_registry is not second.metrics_registry
    assert b"pyrallel_records_consumed_total 0.0" in generate_latest(first.metrics_registry)
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not {n for n in global_names if n.startswith(("pyrallel_", "kafka_consumer_"))}
    shared = CollectorRegistry()
    PrometheusExporter(config(), lambda: snapshot(), registry=shared)
    assert shared.get_sample_value("pyrallel_max_in_flight") == 64, "an app can pass a registry it serves itself"


async def test_a_scrape_from_another_thread_reads_the_state_on_the_event_loop() -> None:
    readers: list[int] = []

    def read() -> MetricsSnapshot:
        readers.append(threading.get_ident())
        return snapshot(partition(0))

    exporter = PrometheusExporter(config(), read)
    exporter.start()  # metrics_port unset: binds the loop, serves nothing
    assert exporter.port is None
    text = await asyncio.to_thread(generate_latest, exporter.registry)
    assert b'pyrallel_true_lag{partition="0",topic="orders"} 12.0' in text
    assert readers == [threading.get_ident()], "the consumer state was read on the loop's thread"


async def test_a_scrape_leaves_the_state_out_when_the_loop_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT_S", 0.05)
    exporter = PrometheusExporter(config(), lambda: snapshot(partition(0)))
    exporter.start()
    exporter.records_received(2)
    result: list[bytes] = []
    scraper = threading.Thread(target=lambda: result.append(generate_latest(exporter.registry)))
    scraper.start()
    scraper.join(timeout=10)  # blocks the loop on purpose while the scrape waits for it
    [text] = result
    assert b"pyrallel_records_consumed_total 2.0" in text, "counters are still served"
    assert b"pyrallel_true_lag{" not in text
    assert "event loop did not answer" in caplog.text


async def test_the_http_server_serves_the_registry_and_stops_with_the_exporter() -> None:
    exporter = PrometheusExporter(config(metrics_port=0), lambda: snapshot())
    exporter.start()
    port = exporter.port
    assert port is not None and port > 0
    url = f"http://127.0.0.1:{port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    assert "pyrallel_max_in_flight 64.0" in await asyncio.to_thread(get)
    exporter.stop()
    assert exporter.port is None
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(get)
