"""The local broker is real: records go round, long commit metadata survives, Connect has the file sink."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from pyrallel_tools.localkafka import cluster
from pyrallel_tools.localkafka.ports import free_port
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration


def _consumer(bootstrap: str, group: str) -> Consumer:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    return Consumer(conf)


def test_ten_thousand_records_round_trip(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic = new_topic(4)
    assert produce_keyed(kafka_bootstrap, topic, 10_000, keys=100) == 10_000
    consumer = _consumer(kafka_bootstrap, unique_name("g"))
    consumer.subscribe([topic])
    seqs: set[int] = set()
    try:
        for _ in range(200):
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None
                seqs.add(int(msg.value().split(b"|", 1)[0]))
            if len(seqs) == 10_000:
                break
    finally:
        consumer.close()
    assert seqs == set(range(10_000))


def test_long_commit_metadata_is_read_back_unchanged(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic = new_topic(1)
    produce_keyed(kafka_bootstrap, topic, 10, keys=1)
    metadata = "pyr1:" + "".join(chr(ord("A") + i % 26) for i in range(3_500))
    consumer = _consumer(kafka_bootstrap, unique_name("g"))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        consumer.commit(offsets=[TopicPartition(topic, 0, 7, metadata)], asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    assert committed.offset == 7
    assert committed.metadata == metadata


def test_connect_worker_offers_the_file_sink(kafka_connect_url: str) -> None:
    with urllib.request.urlopen(f"{kafka_connect_url}/connector-plugins", timeout=10) as resp:
        plugins = [p["class"] for p in json.loads(resp.read())]
    assert "org.apache.kafka.connect.file.FileStreamSinkConnector" in plugins


def _java_pids_under(run_dir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_cli_up_then_down_leaves_no_java_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "second-broker"
    cli = [sys.executable, "-m", "pyrallel_tools.cli", "kafka"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        up = subprocess.run([*cli, "up", "--run-dir", str(run_dir), "--port", str(busy_port)],
                            capture_output=True, text=True, timeout=180, check=False)
    try:
        assert up.returncode == 0, up.stderr
        assert f"Port {busy_port} is taken" in up.stderr
        assert up.stdout.startswith("bootstrap.servers=127.0.0.1:")
        assert f":{busy_port}\n" not in up.stdout
        assert "share.groups=enabled" in up.stdout, up.stdout
        assert _java_pids_under(run_dir), "the broker should be running"
        status = subprocess.run([*cli, "status", "--run-dir", str(run_dir)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert json.loads(status.stdout)["broker_answers"] is True
    finally:
        down = subprocess.run([*cli, "down", "--run-dir", str(run_dir)],
                              capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert _java_pids_under(run_dir) == []
    assert not run_dir.exists()


def test_broker_starts_when_its_cluster_id_begins_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One random cluster id in 64 starts with '-'; formatting the storage must still work."""
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    assert base64.urlsafe_b64encode(dash_first.bytes).decode().startswith("-")
    monkeypatch.setattr(cluster.uuid, "uuid4", lambda: dash_first)
    kafka = cluster.LocalKafka(tmp_path / "dash-id-broker")
    try:
        state, _ = kafka.up(port=free_port())
        assert cluster.broker_answers(state.bootstrap, timeout_s=10.0)
    finally:
        kafka.down()


def test_up_fails_when_another_broker_takes_the_port_after_it_was_picked(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between picking a free port and the broker's bind, another broker may take it: then that other broker answers
    on the port while ours exits, and `up` must not report the other cluster as its own."""
    taken = int(kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
    monkeypatch.setattr(cluster, "pick_port", lambda preferred, avoid=frozenset(): (taken, True))
    kafka = cluster.LocalKafka(tmp_path / "late")
    try:
        with pytest.raises(cluster.LocalKafkaError, match="served by another Kafka cluster"):
            kafka.up(port=taken)
    finally:
        kafka.down()
    assert cluster.broker_answers(kafka_bootstrap, timeout_s=10.0), "the other cluster is left alone"
