"""Pytest fixtures for tests against a real Kafka broker.

``PYRALLEL_BOOTSTRAP_SERVERS`` (and ``PYRALLEL_CONNECT_URL``) point at a running cluster when set; otherwise
the local broker is started once per test session in a temporary run directory and stopped at the end.
Each test gets its own topics and group ids, so tests never see each other's records.

Tests marked ``faults`` get ``fault_cluster``: three brokers (RF 3, ``min.insync.replicas=2``) behind Toxiproxy,
which they may stop, kill and cut off. ``PYRALLEL_FAULT_KAFKA_RUN_DIR`` names the run directory of such a cluster
already running (``pyrallel kafka up --brokers 3 --fault-proxy``); otherwise one is started for the session.

Tests marked ``k8s`` get ``k8s_api``: a real kube-apiserver on etcd (no kubelet) with the third-party CRDs of the
Helm chart's optional objects installed, started once per session.

Tests that ask for ``schema_registry`` get a real schema registry (Apicurio Registry, in memory) whose ``.url`` is
the Confluent-compatible base URL for ``SchemaRegistryClient``; it starts with the first such test and stops at the
end of the session. Mark them ``registry``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pyrallel_tools.localkafka.cluster import LocalKafka
from pyrallel_tools.localkafka.ports import free_port
from pyrallel_tools.localkafka.topics import create_topic

if TYPE_CHECKING:  # lightkube is imported only by sessions that start the API server
    from pyrallel_tools.localk8s.apiserver import LocalApiServer
    from pyrallel_tools.localregistry.server import LocalRegistry


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: pure tests without a broker")
    config.addinivalue_line("markers", "integration: tests against the real local Kafka broker")
    config.addinivalue_line("markers", "faults: tests that break a 3-broker local cluster (fault_cluster)")
    config.addinivalue_line("markers", "k8s: tests against the local kube-apiserver + etcd (k8s_api) and Helm")
    config.addinivalue_line("markers", "registry: tests against the local schema registry (schema_registry)")


@pytest.fixture(scope="session")
def _local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None]]:
    bootstrap = os.environ.get("PYRALLEL_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield bootstrap, os.environ.get("PYRALLEL_CONNECT_URL")
        return
    cluster = LocalKafka(Path(tmp_path_factory.mktemp("kafka")) / "run")
    state, _notes = cluster.up(with_connect=True)
    try:
        yield state.bootstrap, state.connect_url
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(_local_kafka: tuple[str, str | None]) -> str:
    """Bootstrap address of the real broker."""
    return _local_kafka[0]


@pytest.fixture(scope="session")
def kafka_connect_url(_local_kafka: tuple[str, str | None]) -> str:
    """REST URL of the real Kafka Connect worker."""
    url = _local_kafka[1]
    if not url:
        pytest.fail("PYRALLEL_BOOTSTRAP_SERVERS is set but PYRALLEL_CONNECT_URL is not")
    return url


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names unique to this test: ``unique_name("orders")`` -> ``orders-test_x-1a2b3c4d``."""
    # Topic and group names take ASCII letters, digits, '.', '_' and '-' only; a test id may hold anything.
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:60]

    def make(prefix: str) -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def new_topic(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Callable[[int], str]:
    """Create a fresh topic with the given number of partitions and return its name."""

    def make(partitions: int = 1) -> str:
        name = unique_name("t")
        create_topic(kafka_bootstrap, name, partitions)
        return name

    return make


@pytest.fixture(scope="session")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A 3-broker cluster with a fault proxy in front of every broker, shared by the session's fault tests.

    Each test must leave it whole (every broker running and in sync, the proxy reset); the fault suite's own
    ``fault_run`` fixture (tests/faults/conftest.py) does so whatever the test's outcome.
    """
    existing = os.environ.get("PYRALLEL_FAULT_KAFKA_RUN_DIR")
    if existing:
        yield LocalKafka(Path(existing))
        return
    cluster = LocalKafka(Path(tmp_path_factory.mktemp("fault-kafka")) / "run")
    cluster.up(brokers=3, fault_proxy=True, port=free_port())
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def k8s_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApiServer]:
    """A real kube-apiserver + etcd for the session (``.kubeconfig``, ``.url``, ``.token``, ``.ca_file``,
    ``.client()``), with the CRDs of KEDA, Argo Rollouts, prometheus-operator and Strimzi established.

    Each test works in a namespace of its own; the server and its data are removed at the end of the session.
    """
    from pyrallel_tools.localk8s.apiserver import LocalApiServer
    from pyrallel_tools.localk8s.crds import crd_documents

    server = LocalApiServer(Path(tmp_path_factory.mktemp("k8s")) / "run").up()
    try:
        server.install_crds(crd_documents())
        yield server
    finally:
        server.down()


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A real schema registry for the session: Apicurio Registry on 127.0.0.1 with in-memory storage; ``.url`` is
    its Confluent-compatible base URL (``SchemaRegistryClient({"url": schema_registry.url})``).

    Started when the first test asks for it (about 6 s; the distribution is resolved with Maven the first time,
    ``make registry``), stopped at the end of the session. Its schemas are shared by the session's tests: each test
    names its own subjects (``unique_name``).
    """
    from pyrallel_tools.localregistry.server import LocalRegistry

    registry = LocalRegistry(Path(tmp_path_factory.mktemp("registry")) / "run").up()
    try:
        yield registry
    finally:
        registry.down()


_FAULT_ROWS: list[dict[str, Any]] = []


@pytest.fixture
def fault_table() -> Callable[[dict[str, Any]], None]:
    """Adds one row (fault, records, lost, duplicates, ...) to the table printed at the end of the session and
    appended to ``$PYRALLEL_FAULT_RESULTS`` (JSON lines) when that is set."""

    def add(row: dict[str, Any]) -> None:
        _FAULT_ROWS.append(row)
        target = os.environ.get("PYRALLEL_FAULT_RESULTS")
        if target:
            with Path(target).open("a") as out:
                out.write(json.dumps(row) + "\n")

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FAULT_ROWS:
        return
    columns = list(_FAULT_ROWS[0])
    terminalreporter.section("faults: what each did to the records")
    terminalreporter.write_line(" | ".join(columns))
    for row in _FAULT_ROWS:
        terminalreporter.write_line(" | ".join(str(row.get(c, "")) for c in columns))
