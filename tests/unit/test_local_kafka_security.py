"""``pyrallel kafka up --security sasl_ssl`` without a broker: the CLI option, the certificates, the listener's
properties, the SCRAM user given to the storage format, and what the CLI prints for a client."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyrallel_tools.cli.kafka_cmds import kafka as kafka_cli
from pyrallel_tools.localkafka import cluster, processes
from pyrallel_tools.localkafka import security as tls
from pyrallel_tools.localkafka.cluster import LocalKafka
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.ports import free_port
from pyrallel_tools.localkafka.properties import broker_properties
from pyrallel_tools.localkafka.state import ClusterState, NodeState

pytestmark = pytest.mark.unit

CLI = [sys.executable, "-m", "pyrallel_tools.cli", "kafka"]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


def _secure_state(tmp_path: Path) -> ClusterState:
    return ClusterState(version="4.4.0", nodes=[NodeState(node_id=1, port=9092, controller_port=9093, pid=0,
                                                          secure_port=9094)],
                        security="sasl_ssl", scram_user="pyrallel", scram_password="abc123",
                        ca_file=str(tmp_path / "tls" / "ca.pem"))


def test_an_unknown_security_value_is_refused_by_the_cli_without_a_traceback(tmp_path: Path) -> None:
    run_dir = tmp_path / "never-made"
    done = subprocess.run([*CLI, "up", "--run-dir", str(run_dir), "--security", "tls"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Invalid value for '--security': 'tls' is not one of 'plaintext', 'sasl_ssl'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not run_dir.exists()


def test_a_missing_openssl_is_named_before_anything_is_written(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setattr(cluster, "ensure_jars", lambda version: tmp_path / "libs")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    run_dir = tmp_path / "kafka"
    result = CliRunner().invoke(kafka_cli, ["up", "--run-dir", str(run_dir), "--security", "sasl_ssl"])
    assert result.exit_code == 1
    assert "'openssl' command, which is not on PATH" in result.output
    assert result.exc_info is not None and result.exc_info[0] is SystemExit, "a clear message, no traceback"
    assert not run_dir.exists()


@needs_openssl
def test_the_certificates_chain_to_the_ca_and_name_127_0_0_1(tmp_path: Path) -> None:
    made = tls.make_certificates(tmp_path / "tls")
    server = tmp_path / "tls" / "server.pem"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(made.ca_file), "-verify_ip", "127.0.0.1",
                             str(server)], capture_output=True, text=True, timeout=30, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    elsewhere = subprocess.run(["openssl", "verify", "-CAfile", str(made.ca_file), "-verify_ip", "10.1.2.3",
                                str(server)], capture_output=True, text=True, timeout=30, check=False)
    assert elsewhere.returncode != 0, "the certificate names 127.0.0.1 only"
    keystore = made.keystore_file.read_text()
    assert keystore.count("-----BEGIN PRIVATE KEY-----") == 1 and keystore.count("-----BEGIN CERTIFICATE-----") == 2
    for secret in (made.keystore_file, tmp_path / "tls" / "ca.key", tmp_path / "tls" / "server.key"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_the_secure_listener_takes_sasl_ssl_with_scram_and_a_pem_keystore(tmp_path: Path) -> None:
    state = _secure_state(tmp_path)
    extra = tls.listener_properties(tmp_path / "keystore.pem")
    path = broker_properties(tmp_path / "server.properties", state, state.nodes[0], tmp_path / "data", extra)
    props = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert "SECURE://127.0.0.1:9094" in props["listeners"] and "SECURE://127.0.0.1:9094" in props[
        "advertised.listeners"]
    assert "SECURE:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT", "the brokers and the tooling keep PLAINTEXT"
    assert props["listener.name.secure.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.secure.ssl.keystore.type"] == "PEM"
    assert props["listener.name.secure.ssl.keystore.location"] == str(tmp_path / "keystore.pem")
    assert "ScramLoginModule required" in props["listener.name.secure.scram-sha-512.sasl.jaas.config"]


def test_sasl_ssl_gives_every_node_a_port_of_its_own(tmp_path: Path) -> None:
    notes: list[str] = []
    nodes = LocalKafka(tmp_path)._plan_nodes(free_port(), 3, True, "sasl_ssl", notes)
    ports = [p for n in nodes for p in (n.port, n.controller_port, n.proxy_port, n.proxied_port, n.secure_port)]
    assert None not in ports and len(set(ports)) == len(ports) == 15
    assert all(n.secure_port is None for n in LocalKafka(tmp_path)._plan_nodes(free_port(), 1, False,
                                                                               "plaintext", notes))


def test_the_storage_format_adds_the_scram_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(processes, "java_cmd", lambda libs, heap, log, main, *args: [main, *args])
    scram = tls.scram_format_argument("pyrallel", "abc123")
    LocalKafka(tmp_path)._format(tmp_path, tmp_path, tmp_path / "server.properties", "cid", scram)
    LocalKafka(tmp_path)._format(tmp_path, tmp_path, tmp_path / "server.properties", "cid", None)
    assert "--add-scram=SCRAM-SHA-512=[name=pyrallel,password=abc123]" in calls[0]
    assert not any(arg.startswith("--add-scram") for arg in calls[1])


def test_up_prints_what_a_secure_client_sets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = _secure_state(tmp_path)
    monkeypatch.setattr(LocalKafka, "up", lambda self, **kwargs: (state, []))
    result = CliRunner().invoke(kafka_cli, ["up", "--run-dir", str(tmp_path), "--security", "sasl_ssl"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for line in ("secure.bootstrap.servers=127.0.0.1:9094", "secure.security.protocol=SASL_SSL",
                 "secure.sasl.mechanism=SCRAM-SHA-512", "secure.sasl.username=pyrallel",
                 "secure.sasl.password=abc123", f"secure.ssl.ca.location={tmp_path / 'tls' / 'ca.pem'}"):
        assert line in lines


def test_address_secure_prints_the_secure_bootstrap_or_says_how_to_get_one(tmp_path: Path) -> None:
    secure, plain = tmp_path / "secure", tmp_path / "plain"
    secure.mkdir()
    plain.mkdir()
    _secure_state(tmp_path).save(secure)
    ClusterState(version="4.4.0", nodes=[NodeState(node_id=1, port=9092, controller_port=9093)]).save(plain)
    runner = CliRunner()
    assert runner.invoke(kafka_cli, ["address", "--run-dir", str(secure), "--secure"]).output == "127.0.0.1:9094\n"
    refused = runner.invoke(kafka_cli, ["address", "--run-dir", str(plain), "--secure"])
    assert refused.exit_code == 1 and "--security sasl_ssl" in refused.output
    both = runner.invoke(kafka_cli, ["address", "--run-dir", str(secure), "--secure", "--proxied"])
    assert both.exit_code == 2 and "at most one of" in both.output


def test_a_secure_state_survives_the_state_file(tmp_path: Path) -> None:
    _secure_state(tmp_path).save(tmp_path)
    loaded = ClusterState.load(tmp_path)
    assert loaded is not None and loaded.secure_bootstrap == "127.0.0.1:9094"
    assert loaded.secure_client_properties() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "pyrallel",
        "sasl.password": "abc123", "ssl.ca.location": str(tmp_path / "tls" / "ca.pem"),
    }
    plain = ClusterState(version="4.4.0", nodes=[NodeState(node_id=1, port=9092, controller_port=9093)])
    assert plain.secure_client_properties() is None


def test_a_failing_openssl_shows_its_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "openssl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'unable to load provider' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(LocalKafkaError, match=r"(?s)openssl genpkey .*exit 3.*unable to load provider"):
        tls.make_certificates(tmp_path / "tls")
