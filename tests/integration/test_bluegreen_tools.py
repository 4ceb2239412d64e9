"""Blue/green tools on the real broker: the HTTP control server, the load producer, the consume app and its
faults, and ``pyrallel produce | consume | validate`` end to end as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition
from tests.support import http, http_sync, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.control.lifecycle import LifecycleState
from pyrallel_tools.bluegreen.consume_app import ConsumeApp, Faults, RunLimits
from pyrallel_tools.bluegreen.load_producer import LoadPlan, LoadProducer, LoadSettings, parse_identity
from pyrallel_tools.cli.main import cli

pytestmark = pytest.mark.integration

PYRALLEL = str(Path(sys.executable).with_name("pyrallel"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def topic_records(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """seq -> (partition, offset) of every record in the topic."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    found: dict[int, tuple[int, int]] = {}
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        while len(found) < sum(ends.values()):
            for msg in consumer.consume(500, timeout=1):
                if msg.error() is None:
                    identity = parse_identity(msg.value())
                    assert identity is not None
                    found[identity[0]] = (msg.partition(), msg.offset())
    finally:
        consumer.close()
    return found


def produce_load(bootstrap: str, topic: str, log: Path, count: int, keys: int = 10) -> list[dict[str, Any]]:
    plan = LoadPlan(bootstrap, topic, log, keys=keys, count=count)
    summary = asyncio.run(LoadProducer(plan, LoadSettings(rate=100_000, size=64)).run())
    assert summary.acked == count
    return read_jsonl(log)


async def produce_load_async(bootstrap: str, topic: str, log: Path, count: int, keys: int = 10) -> None:
    await asyncio.to_thread(produce_load, bootstrap, topic, log, count, keys)


@contextlib.asynccontextmanager
async def running(app: ConsumeApp) -> AsyncIterator[str]:
    """Run ``app`` until the block ends; yields the control server URL once the consumer is ACTIVE."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(app.run(stop, lambda _app: ready.set()))
    await asyncio.wait_for(ready.wait(), 60)
    assert app.consumer is not None and app.consumer.control_server is not None
    await wait_for(lambda: app.consumer is not None and app.consumer.lifecycle.state is LifecycleState.ACTIVE,
                   what="ACTIVE")
    try:
        yield app.consumer.control_server.url
    finally:
        stop.set()
        summary = await asyncio.wait_for(task, 60)
        assert summary["error"] is None


def app_config(bootstrap: str, group: str, topic: str, **extra: Any) -> ConsumerConfig:
    values: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": group, "topics": [topic],
                              "color": "blue", "instance_id": "blue-1", "control_port": 0,
                              "commit_interval_ms": 200}
    values.update(extra)
    return ConsumerConfig(**values)


# ---- control server on a real consumer ---------------------------------------------------------------------


async def test_http_control_drives_a_real_consumer(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group, token = new_topic(2), unique_name("g"), "tok-" + unique_name("x")
    handled: list[int] = []

    async def handle(record: Record) -> None:
        identity = parse_identity(record.value)
        assert identity is not None
        handled.append(identity[0])

    config = app_config(kafka_bootstrap, group, topic, control_token=token)
    consumer = PyrallelConsumer(config, handle)
    async with consumer:
        assert consumer.control_server is not None
        url = consumer.control_server.url
        await wait_for(lambda: len(consumer.lifecycle.status()["assigned_partitions"]) == 2, what="assignment")
        assert await http("GET", f"{url}/readyz") == (200, {"ready": True, "state": "ACTIVE"})
        status, body = await http("POST", f"{url}/lifecycle/pause")
        assert (status, body["error"]) == (401, "a valid bearer token is required")
        assert consumer.lifecycle.state is LifecycleState.ACTIVE

        status, body = await http("POST", f"{url}/lifecycle/pause", token=token)
        assert (status, body["state"], body["target"]) == (202, "DRAINING", "PAUSED")
        status, body = await http("POST", f"{url}/lifecycle/pause?wait=30", token=token)
        assert (status, body["state"]) == (200, "PAUSED")
        status, body = await http("GET", f"{url}/lifecycle/status", token=token)
        assert (status, body["state"], body["assigned_partitions"]) == (200, "PAUSED", [])
        assert (await http("GET", f"{url}/readyz"))[0] == 200

        await produce_load_async(kafka_bootstrap, topic, tmp_path / "p.jsonl", 30)
        status, body = await http("POST", f"{url}/lifecycle/resume?generation=5&wait=30", token=token)
        assert (status, body["state"], body["generation"]) == (200, "ACTIVE", 5)
        await wait_for(lambda: len(handled) == 30, what="records handled after the HTTP resume")
        status, body = await http("POST", f"{url}/lifecycle/pause?generation=4", token=token)
        assert (status, body["generation"]) == (409, 5)
        assert consumer.lifecycle.state is LifecycleState.ACTIVE, "a stale command must not act"
        status, body = await http("POST", f"{url}/lifecycle/pause?wait=abc", token=token)
        assert status == 400
    assert sorted(handled) == list(range(30))
    with pytest.raises(urllib.error.URLError):
        http_sync("GET", f"{url}/healthz")


# ---- load producer ---------------------------------------------------------------------------------------


async def test_producer_at_a_fixed_rate_logs_exactly_the_acked_records(
    kafka_bootstrap: str, new_topic: Callable[[int], str], tmp_path: Path
) -> None:
    topic, log = new_topic(3), tmp_path / "produced.jsonl"
    plan = LoadPlan(kafka_bootstrap, topic, log, keys=7, count=250, seed=1, metrics_port=0)
    producer = LoadProducer(plan, LoadSettings(rate=250, size=200))
    summary = await producer.run()
    assert (summary.attempted, summary.acked, summary.errors, summary.unacked) == (250, 250, 0, 0)
    assert summary.elapsed_s >= 249 / 250 * 0.95, "250 records at 250/s cannot take less than ~1 s"
    assert producer.registry.get_sample_value("pyrallel_load_records_sent_total") == 250
    assert producer.registry.get_sample_value("pyrallel_load_send_errors_total") == 0

    logged = read_jsonl(log)
    assert sorted(r["seq"] for r in logged) == list(range(250))
    in_topic = await asyncio.to_thread(topic_records, kafka_bootstrap, topic, 3)
    assert {r["seq"]: (r["partition"], r["offset"]) for r in logged} == in_topic
    per_key: dict[str, list[int]] = {}
    for r in sorted(logged, key=lambda r: r["seq"]):
        per_key.setdefault(r["key"], []).append(r["key_seq"])
    assert len(per_key) == 7
    assert all(seqs == list(range(len(seqs))) for seqs in per_key.values())


async def test_producer_rate_changes_at_runtime_and_failures_are_counted_apart(
    kafka_bootstrap: str, new_topic: Callable[[int], str], tmp_path: Path
) -> None:
    topic = new_topic(1)
    producer = LoadProducer(LoadPlan(kafka_bootstrap, topic, tmp_path / "a.jsonl", count=300, control_port=0),
                            LoadSettings(rate=20, size=64))
    changed: list[tuple[int, Any]] = []

    async def speed_up() -> None:
        await wait_for(lambda: producer.control_url is not None and producer.counters()["acked"] >= 5,
                       what="first acks")
        assert (await http("PUT", f"{producer.control_url}/config", {"rate": 0}))[0] == 400
        changed.append(await http("PUT", f"{producer.control_url}/config", {"rate": 5000}))
        changed.append(await http("GET", f"{producer.control_url}/config"))

    summary, _ = await asyncio.gather(producer.run(), speed_up())
    assert changed[0][0] == 200
    assert changed[1][1]["rate"] == 5000
    assert summary.acked == 300
    assert summary.elapsed_s < 300 / 20 / 2, "at the initial 20/s this run would take 15 s"

    too_big = LoadProducer(
        LoadPlan(kafka_bootstrap, topic, tmp_path / "b.jsonl", count=5, kafka=(("message.max.bytes", "1000"),)),
        LoadSettings(rate=1000, size=5000),
    )
    failed = await too_big.run()
    assert (failed.acked, failed.errors) == (0, 5)
    assert read_jsonl(tmp_path / "b.jsonl") == [], "failed sends are never logged as produced"
    assert too_big.registry.get_sample_value("pyrallel_load_send_errors_total") == 5


# ---- consume app faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["async", "process"])
async def test_failure_rate_set_over_http_fails_records_and_counts_them(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    engine: str,
) -> None:
    topic, log = new_topic(2), tmp_path / "consumed.jsonl"
    config = app_config(kafka_bootstrap, unique_name("g"), topic, engine=engine, max_retries=0,
                        ordering="unordered", process_workers=2)
    app = ConsumeApp(config, "noop", Faults(), log, RunLimits(duration_s=120))
    async with running(app) as url:
        status, body = await http("PUT", f"{url}/faults", {"failure_rate": 0.5})
        assert (status, body["failure_rate"]) == (200, 0.5)
        await produce_load_async(kafka_bootstrap, topic, tmp_path / "p.jsonl", 200)
        await wait_for(lambda: app.completed_ok + app.completed_failed == 200, what="200 records completed")
        status, stats = await http("GET", f"{url}/stats")
    assert status == 200
    assert 0 < app.completed_failed < 200, "about half of the records fail"
    assert stats["metrics"]["records_failed"] == app.completed_failed
    assert stats["metrics"]["records_succeeded"] == app.completed_ok
    logged = read_jsonl(log)
    assert sorted(r["seq"] for r in logged) == list(range(200))
    assert sum(1 for r in logged if not r["ok"]) == app.completed_failed


async def test_processing_delay_spaces_the_records_of_a_partition(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, log = new_topic(1), tmp_path / "consumed.jsonl"
    config = app_config(kafka_bootstrap, unique_name("g"), topic, ordering="partition")
    app = ConsumeApp(config, "noop", Faults(delay_ms=40), log, RunLimits(duration_s=120, max_records=15))
    task = asyncio.create_task(app.run())
    await wait_for(lambda: app.consumer is not None and app.consumer.lifecycle.state is LifecycleState.ACTIVE,
                   what="ACTIVE")
    await produce_load_async(kafka_bootstrap, topic, tmp_path / "p.jsonl", 15)
    summary = await asyncio.wait_for(task, 60)
    assert (summary["stop_reason"], summary["completed_ok"]) == ("max records reached", 15)
    stamps = [r["ts"] for r in read_jsonl(log)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 14
    assert min(gaps) >= 0.038, f"records of one partition must be >= 40 ms apart, got {min(gaps):.4f}s"


async def test_slow_commit_raises_the_measured_commit_latency(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = new_topic(1)
    app = ConsumeApp(app_config(kafka_bootstrap, unique_name("g"), topic), "noop", Faults(), None,
                     RunLimits(duration_s=120))
    async with running(app) as url:
        await produce_load_async(kafka_bootstrap, topic, tmp_path / "p1.jsonl", 20)
        await wait_for(lambda: app.completed_ok == 20 and app.stats()["commit_latency"]["count"] > 0,
                       what="a first commit")
        baseline = app.stats()["commit_latency"]["max_s"]
        assert (await http("PUT", f"{url}/faults", {"commit_delay_ms": 400}))[0] == 200
        await produce_load_async(kafka_bootstrap, topic, tmp_path / "p2.jsonl", 20)
        await wait_for(lambda: (app.stats()["commit_latency"]["last_s"] or 0) >= 0.4, what="a slow commit")
    assert baseline < 0.4


async def test_poll_stall_past_max_poll_interval_forces_a_rebalance(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = new_topic(2)
    config = app_config(kafka_bootstrap, unique_name("g"), topic,
                        kafka={"max.poll.interval.ms": "6000", "session.timeout.ms": "6000"})
    app = ConsumeApp(config, "noop", Faults(), None, RunLimits(duration_s=120))
    async with running(app) as url:
        consumer = app.consumer
        assert consumer is not None
        await wait_for(lambda: len(consumer.lifecycle.status()["assigned_partitions"]) == 2, what="assignment")
        before = dict(consumer.metrics().rebalances)
        status, body = await http("PUT", f"{url}/faults", {"stall_ms": 8000})
        assert (status, body["stalls"]) == (200, 1)

        def rejoined() -> bool:
            now = consumer.metrics().rebalances
            left = now["lost"] + now["revoke"] > before["lost"] + before["revoke"]
            return left and now["assign"] > before["assign"] and len(consumer.lifecycle.status()[
                "assigned_partitions"]) == 2

        await wait_for(rejoined, timeout_s=45, what="eviction and rejoin after the stall")
        await produce_load_async(kafka_bootstrap, topic, tmp_path / "p.jsonl", 10)
        await wait_for(lambda: app.completed_ok >= 10, what="records handled after the rejoin")


# ---- the three commands end to end -----------------------------------------------------------------------


def _start(args: list[str], stderr: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    with open(stderr, "w") as err:
        return subprocess.Popen([PYRALLEL, *args], stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, **(env or {})})


def _pyrallel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYRALLEL, *args], capture_output=True, text=True, timeout=120)


async def _announced(proc: subprocess.Popen[str], name: str) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.startswith(f"{name}="), f"expected {name}=..., got {line!r} (exit code {proc.poll()})"
    return line.strip().split("=", 1)[1]


async def test_consume_produce_validate_end_to_end(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = new_topic(4), unique_name("g")
    produced, consumed = tmp_path / "produced.jsonl", tmp_path / "blue.jsonl"
    settings = tmp_path / "consume.toml"
    settings.write_text(f'group = "{group}"\ncolor = "blue"\nkafka = {{"fetch.wait.max.ms" = "50"}}\n'
                        '[faults]\ndelay_ms = 1\n')
    consume = _start(["consume", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--config",
                      str(settings), "--instance-id", "blue-1", "--log", str(consumed), "--control-port", "0",
                      "--duration", "90", "--workload", "sleep:1ms"],
                     tmp_path / "consume.err", {"PYRALLEL_FAULT_COMMIT_DELAY_MS": "5"})
    try:
        url = await _announced(consume, "control.url")
        status, faults = await http("GET", f"{url}/faults")
        assert (status, faults["delay_ms"], faults["commit_delay_ms"]) == (200, 1.0, 5.0), "file and env"
        await wait_for(lambda: http_sync("GET", f"{url}/readyz")[0] == 200, what="consumer ready")
        produce = await asyncio.to_thread(
            _pyrallel, "produce", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--count", "400",
            "--rate", "400", "--keys", "20", "--log", str(produced))
        assert produce.returncode == 0, produce.stderr
        assert json.loads(produce.stdout.splitlines()[-1])["acked"] == 400
        await wait_for(lambda: http_sync("GET", f"{url}/stats")[1]["completed_ok"] == 400, what="400 handled")
        consume.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(asyncio.to_thread(consume.wait), 60)
    finally:
        if consume.poll() is None:
            consume.kill()
            consume.wait()
    assert consume.stdout is not None
    summary = json.loads(consume.stdout.read().splitlines()[-1])
    assert rc == 0, (tmp_path / "consume.err").read_text()[-3000:]
    assert (summary["stop_reason"], summary["completed_ok"], summary["state"]) == ("stop requested", 400, "STOPPED")

    report_path = tmp_path / "report.json"
    validate = await asyncio.to_thread(
        _pyrallel, "validate", "--producer-log", str(produced), "--consumer-log", str(consumed),
        "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group", group, "--out", str(report_path))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    report = json.loads(report_path.read_text())
    assert (report["ok"], report["produced"], report["unique_consumed"], report["lost"]) == (True, 400, 400, 0)
    assert report["order_violations"] == 0
    assert report["drain"]["records"] == 0
    assert "result" in validate.stdout

    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("".join(consumed.read_text().splitlines(keepends=True)[:-10]))
    failing = await asyncio.to_thread(_pyrallel, "validate", "--producer-log", str(produced), "--consumer-log",
                                      str(truncated))
    assert failing.returncode == 1
    assert "FAIL (lost 10" in failing.stdout


async def test_drain_reports_records_behind_the_committed_offsets_as_pending(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = new_topic(2), unique_name("g")
    await produce_load_async(kafka_bootstrap, topic, tmp_path / "p.jsonl", 50)
    (tmp_path / "none.jsonl").write_text("")
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli, [
        "validate", "--producer-log", str(tmp_path / "p.jsonl"), "--consumer-log", str(tmp_path / "none.jsonl"),
        "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group", group, "--out",
        str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["lost"], report["pending"], report["drain"]["records"]) == (0, 50, 50)


# ---- clear errors for bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["produce", "--bootstrap-servers", "x:1", "--topic", "t", "--log", "{tmp}/p.jsonl"], "--count, --duration"),
    (["produce", "--bootstrap-servers", "x:1", "--topic", "t", "--log", "{tmp}/p.jsonl", "--count", "1",
      "--rate", "-5"], "rate"),
    (["produce", "--bootstrap-servers", "x:1", "--topic", "t", "--log", "{tmp}/p.jsonl", "--count", "1",
      "--kafka", "novalue"], "KEY=VALUE"),
    (["consume", "--bootstrap-servers", "x:1", "--topic", "t", "--group", "g"], "--duration, --max-records"),
    (["consume", "--bootstrap-servers", "x:1", "--topic", "t", "--group", "g", "--duration", "1",
      "--workload", "sleep:fast"], "workload"),
    (["consume", "--bootstrap-servers", "x:1", "--topic", "t", "--group", "g", "--duration", "1",
      "--fault-failure-rate", "2"], "failure_rate"),
    (["consume", "--bootstrap-servers", "x:1", "--topic", "t", "--group", "g", "--duration", "1",
      "--kafka", "enable.auto.commit=true"], "set by the library"),
    (["consume", "--config", "{tmp}/bad.toml", "--bootstrap-servers", "x:1", "--topic", "t", "--group", "g",
      "--duration", "1"], "unknown setting 'colour'"),
    (["validate", "--producer-log", "{tmp}/p.jsonl", "--consumer-log", "{tmp}/p.jsonl", "--topic", "t"],
     "--group together"),
    (["validate", "--producer-log", "{tmp}/p.jsonl", "--sink", "nocolor"], "FILE:COLOR"),
])
def test_bad_input_is_a_clear_error_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "p.jsonl").write_text("")
    (tmp_path / "bad.toml").write_text('colour = "blue"\n')
    result = CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
