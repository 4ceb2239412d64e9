"""Bad environments give one clear sentence, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyrallel_tools.localkafka import jars
from pyrallel_tools.localkafka.cluster import LocalKafka
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.ports import pick_port
from pyrallel_tools.localkafka.state import ClusterState, NodeState

pytestmark = pytest.mark.unit

CLI = [sys.executable, "-m", "pyrallel_tools.cli", "kafka"]


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(LocalKafkaError, match="Java was not found"):
        jars.java_executable()


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "jdk" / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(LocalKafkaError, match=r"Java 11 found .* needs Java 17"):
        jars.java_executable()


def test_missing_maven_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYRALLEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="Maven \\(mvn\\) was not found"):
        jars.ensure_jars()


def test_maven_failure_shows_its_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_mvn = tmp_path / "bin" / "mvn"
    fake_mvn.parent.mkdir()
    fake_mvn.write_text("#!/bin/sh\necho 'Could not transfer artifact org.apache.kafka:kafka_2.13'\nexit 1\n")
    fake_mvn.chmod(0o755)
    monkeypatch.setenv("PYRALLEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{fake_mvn.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LocalKafkaError, match=r"(?s)Maven could not resolve.*Could not transfer artifact"):
        jars.ensure_jars()


def test_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port, preferred = pick_port(busy)
    assert not preferred
    assert port != busy


def test_stale_run_directory_is_reported_and_down_cleans_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ClusterState(version="4.4.0", nodes=[NodeState(node_id=1, port=1, controller_port=2, pid=2**22 + 7)]).save(run_dir)
    with pytest.raises(LocalKafkaError, match="Stale run directory"):
        LocalKafka(run_dir).up()
    up = subprocess.run([*CLI, "up", "--run-dir", str(run_dir)], capture_output=True, text=True, check=False)
    assert up.returncode == 1
    assert "Stale run directory" in up.stderr
    assert "Traceback" not in up.stderr
    down = subprocess.run([*CLI, "down", "--run-dir", str(run_dir)], capture_output=True, text=True,
                          check=False)
    assert down.returncode == 0
    assert not run_dir.exists()


def test_status_of_nothing_running_exits_1(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "status", "--run-dir", str(tmp_path / "none")], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 1
    assert json.loads(out.stdout)["running"] is False


@pytest.mark.parametrize("version", ["3.9.1", "4.4", "latest", "4.4.0-rc1"])
def test_unsupported_kafka_version_is_refused_by_name(version: str, tmp_path: Path) -> None:
    up = subprocess.run([*CLI, "up", "--run-dir", str(tmp_path / "run"), "--kafka-version", version],
                        capture_output=True, text=True, check=False)
    assert up.returncode == 1
    assert f"Kafka version {version!r} is not supported" in up.stderr
    assert "Traceback" not in up.stderr
    assert not (tmp_path / "run").exists()


def test_two_brokers_are_refused(tmp_path: Path) -> None:
    up = subprocess.run([*CLI, "up", "--run-dir", str(tmp_path / "run"), "--brokers", "2"],
                        capture_output=True, text=True, check=False)
    assert up.returncode == 2
    assert "'2' is not one of '1', '3'" in up.stderr


def test_stopping_an_unknown_broker_names_the_known_ones(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ClusterState(version="4.4.0", nodes=[NodeState(node_id=1, port=1, controller_port=2)]).save(run_dir)
    out = subprocess.run([*CLI, "stop-broker", "--run-dir", str(run_dir), "4"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 1
    assert "No broker 4 in this cluster (brokers: 1)" in out.stderr


def test_a_state_file_of_an_earlier_layout_is_cleaned_up_by_down(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"bootstrap": "127.0.0.1:1", "broker_pid": 2**22 + 7}))
    status = subprocess.run([*CLI, "status", "--run-dir", str(run_dir)], capture_output=True, text=True,
                            check=False)
    assert "pyrallel kafka down --run-dir" in status.stderr
    assert "Traceback" not in status.stderr
    down = subprocess.run([*CLI, "down", "--run-dir", str(run_dir)], capture_output=True, text=True, check=False)
    assert down.returncode == 0
    assert not run_dir.exists()
