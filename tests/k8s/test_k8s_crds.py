"""The third-party CRDs the chart's optional objects need: fetched from their real releases, each a served schema.

The first run fetches them (Go module proxy, Maven Central; about a minute), later runs read the cache.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyrallel_tools.localk8s import crds
from pyrallel_tools.localkafka.errors import LocalKafkaError

# Not `unit`: a cold run fetches from the Go module proxy and Maven Central and runs Java.
pytestmark = pytest.mark.k8s

_NEEDED = {
    "ScaledObject": "keda.sh",
    "TriggerAuthentication": "keda.sh",
    "Rollout": "argoproj.io",
    "AnalysisTemplate": "argoproj.io",
    "AnalysisRun": "argoproj.io",
    "Experiment": "argoproj.io",
    "ClusterAnalysisTemplate": "argoproj.io",
    "ServiceMonitor": "monitoring.coreos.com",
    "PodMonitor": "monitoring.coreos.com",
    "PrometheusRule": "monitoring.coreos.com",
    "KafkaConnect": "kafka.strimzi.io",
    "KafkaConnector": "kafka.strimzi.io",
}


def _served_with_schema(crd: dict[str, Any]) -> list[str]:
    return [
        v["name"] for v in crd["spec"]["versions"] if v.get("served") and v.get("schema", {}).get("openAPIV3Schema")
    ]


def test_every_needed_kind_is_a_v1_crd_with_a_served_schema() -> None:
    folder = crds.ensure_crds()
    assert folder.name == crds.crds_key()
    for project, version in crds.CRD_VERSIONS.items():
        assert f"{project}-{version}" in folder.name, "the versions are the cache key"
    documents = crds.crd_documents()
    assert len(documents) == len(list(folder.glob("*.yaml")))
    by_kind = {doc["spec"]["names"]["kind"]: doc for doc in documents}
    for kind, group in _NEEDED.items():
        assert kind in by_kind, f"{kind} is missing from {folder}"
        crd = by_kind[kind]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
        assert crd["spec"]["group"] == group
        assert _served_with_schema(crd), f"{kind} has no served version with an openAPIV3Schema"
        assert (folder / f"{crd['metadata']['name']}.yaml").is_file(), "one file per CRD, named after it"


def test_strimzi_connector_schema_has_the_states_strategy_e_uses() -> None:
    by_kind = {doc["spec"]["names"]["kind"]: doc for doc in crds.crd_documents()}
    connector = by_kind["KafkaConnector"]
    served = _served_with_schema(connector)
    assert served == ["v1"], "Strimzi 1.x serves kafka.strimzi.io/v1 only"
    schema = connector["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(schema["properties"]["spec"]["properties"]["state"]["enum"]) == {"running", "paused", "stopped"}


def test_a_second_call_reads_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    first = crds.ensure_crds()

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a cached call ran {args!r}")

    monkeypatch.setattr(crds.subprocess, "run", no_subprocess)
    assert crds.ensure_crds() == first, "the marker makes a later call a no-op: neither Go, Maven nor Java runs"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "not a apiextensions.k8s.io/v1"),
        ("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n---\nkind: Other\n", "2 YAML"),
        (
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: xs.example.com}\n"
            "spec: {versions: [{name: v1, served: true}]}\n",
            "no served version with an openAPIV3Schema",
        ),
        ("a: [", "not valid YAML"),
    ],
)
def test_a_file_that_is_not_one_crd_with_a_schema_is_refused(text: str, problem: str) -> None:
    with pytest.raises(LocalKafkaError, match=problem):
        crds._parse_crd(text.encode(), "test.yaml")
