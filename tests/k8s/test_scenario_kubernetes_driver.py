"""A scenario run switched through the Kubernetes-native controller (``pyrallel scenario run --driver kubernetes``),
against the real kube-apiserver (k8s_api) and the real Kafka: the run file says so, and so does the report."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Namespace

from pyrallel_tools.bluegreen.reporting.build import build_report
from pyrallel_tools.bluegreen.run_record import read_run_record
from pyrallel_tools.bluegreen.run_spec import RunOptions
from pyrallel_tools.bluegreen.scenarios import ScenarioRun
from pyrallel_tools.localk8s.apiserver import LocalApiServer

pytestmark = pytest.mark.k8s


def test_a_switch_and_rollback_through_the_kubernetes_controller_lose_nothing(
        kafka_bootstrap: str, k8s_api: LocalApiServer, tmp_path: Path) -> None:
    options = RunOptions(bootstrap=kafka_bootstrap, out_dir=tmp_path / "run", work_dir=tmp_path / "work",
                         instances=1, partitions=4, rate=50.0, keys=16, settle_s=2.0, driver="kubernetes",
                         kubeconfig=k8s_api.kubeconfig)
    result = ScenarioRun("C", 2, None, options).execute()

    record = read_run_record(tmp_path / "run" / f"{result['run_id']}.json")
    assert record.verdict == "PASS", record.cause
    assert record.validation.lost == 0
    assert record.validation.dual_active_count == 0
    assert record.validation.produced > 100
    assert record.environment["driver"] == "kubernetes"
    assert str(record.environment["kube_apiserver"]).startswith("v1.")
    assert [(s.action, s.from_color, s.to_color, s.ok, s.strategy) for s in record.switches] == [
        ("switch", "blue", "green", True, "C"), ("rollback", "green", "blue", True, "C")]
    for switch in record.switches:
        assert switch.processing_gap_s is not None and switch.processing_gap_s >= 0, switch
        assert switch.controller_gap_s is not None and 0 <= switch.controller_gap_s < 10, switch
        assert [s.name for s in switch.steps][:1] == [f"pause {switch.from_color}"], switch.steps
    assert record.conditions["consumer_deployment"].endswith(f"/dep-{result['run_id'].lower()}")
    assert Path(record.conditions["controller_log"]).read_text().count('"switch_finished"') == 2
    # The run's namespace is gone from the shared API server: the driver cleans up after itself.
    namespace = record.conditions["consumer_deployment"].split("/")[0]
    client = k8s_api.client()
    try:
        phase = [n.status.phase for n in client.list(Namespace) if n.metadata and n.metadata.name == namespace
                 and n.status]
    finally:
        client.close()
    assert phase in ([], ["Terminating"]), phase

    md = build_report(tmp_path / "run", tmp_path / "report").read_text()
    assert "driven through the Kubernetes controller" in md
    assert "Kubernetes controller's gap estimate" in md

