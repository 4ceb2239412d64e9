"""The local API server refuses what a real cluster refuses: the chart's tests rely on it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from pyrallel_tools.localk8s.apiserver import LocalApiServer

pytestmark = pytest.mark.k8s

KafkaConnector = create_namespaced_resource("kafka.strimzi.io", "v1", "KafkaConnector", "kafkaconnectors")


def _connector(name: str, state: str) -> Any:
    return KafkaConnector({
        "apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaConnector",
        "metadata": {"name": name, "labels": {"strimzi.io/cluster": "connect"}},
        "spec": {"class": "org.apache.kafka.connect.file.FileStreamSinkConnector", "tasksMax": 1, "state": state,
                 "config": {"topics": "orders", "file": "/tmp/sink.txt"}},
    })


def test_third_party_schemas_are_enforced_on_server_side_apply(k8s_api: LocalApiServer) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    client = k8s_api.client(namespace)
    client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    client.apply(_connector("good", "stopped"), force=True)
    assert client.get(KafkaConnector, "good")["spec"]["state"] == "stopped"
    with pytest.raises(ApiError) as refused:
        client.apply(_connector("bad", "sleeping"), force=True)
    assert refused.value.status.code == 422
    assert "spec.state" in str(refused.value.status.message)


def test_cli_starts_and_stops_a_server(tmp_path: Path) -> None:
    run_dir = tmp_path / "k8s"
    pyrallel = [sys.executable, "-m", "pyrallel_tools.cli"]
    up = subprocess.run([*pyrallel, "k8s", "up", "--no-crds", "--run-dir", str(run_dir)],
                        capture_output=True, text=True, timeout=120, check=False)
    try:
        assert up.returncode == 0, up.stderr
        assert f"kubeconfig={run_dir / 'kubeconfig'}" in up.stdout
        namespaces = LocalApiServer(run_dir).client().list(Namespace)
        assert "kube-system" in {ns.metadata.name for ns in namespaces if ns.metadata}
    finally:
        down = subprocess.run([*pyrallel, "k8s", "down", "--run-dir", str(run_dir)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists(), "down removes what up wrote"
