"""The Helm chart deploy/helm/pyrallel-consumer: lint and render for each values combination, what the rendered
objects do for a user (pods start paused, one token, the library accepts the env, RBAC, one source of alerts and
dashboard), values.schema.json refusing bad values by name, and every combination installed with Helm (server-side
apply) on the real local kube-apiserver with the real third-party CRDs.

Helm v4 comes from the Kubernetes test bed's cache (``ensure_k8s``: built once with Go, hence the ``k8s`` marker).
"""

from __future__ import annotations

import enum
import json
import os
import re
import subprocess
import typing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Secret, Service
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from pyrallel_consumer import ConsumerConfig
from pyrallel_consumer.bluegreen.kubernetes.reconciler import lease_name
from pyrallel_tools.cli.main import cli
from pyrallel_tools.localk8s.apiserver import LocalApiServer
from pyrallel_tools.localk8s.binaries import ensure_k8s

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "pyrallel-consumer"
SCHEMA = CHART / "values.schema.json"
RELEASE = "orders"
FULLNAME = "orders-pyrallel-consumer"
TOKEN = "s3cret-Token_for.tests"

ConsumerDeployment = create_namespaced_resource("pyrallel.io", "v1alpha1", "ConsumerDeployment",
                                                "consumerdeployments")
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
Rollout = create_namespaced_resource("argoproj.io", "v1alpha1", "Rollout", "rollouts")
AnalysisTemplate = create_namespaced_resource("argoproj.io", "v1alpha1", "AnalysisTemplate", "analysistemplates")
KafkaConnector = create_namespaced_resource("kafka.strimzi.io", "v1", "KafkaConnector", "kafkaconnectors")
PrometheusRule = create_namespaced_resource("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")
PodMonitor = create_namespaced_resource("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors")

_BASE: dict[str, Any] = {
    "image": {"repository": "registry.example/orders-consumer", "tag": "1.4.2"},
    "bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092",
    "topic": "orders",
}
COMBINATIONS: dict[str, dict[str, Any]] = {
    "plain": _BASE,
    "keda": {**_BASE, "strategy": "B", "keda": {"enabled": True, "partitions": 8, "maxReplicaCount": 8}},
    "strimzi": {"bootstrapServers": _BASE["bootstrapServers"], "topic": "orders", "strategy": "E",
                "strimzi": {"enabled": True}},
    "argo": {**_BASE, "argo": {"enabled": True}},
    # Every option that can be on together: Strimzi is strategy E (connectors, no consumer pods), which KEDA and Argo
    # (both about consumer pods) exclude, so it has its own combination above.
    "all": {
        **_BASE, "strategy": "B", "activeColor": "green",
        "groups": {"blue": "orders-v1"},
        "colors": {"blue": {"replicas": 3, "image": {"tag": "1.4.1"}},
                   "green": {"replicas": 3, "extraEnv": [{"name": "FEATURE_X", "value": "on"}]}},
        "consumer": {
            "config": {"max_in_flight": 250, "queue_max_bytes": 134217728, "engine": "process", "dlq_enabled": True,
                       "drain_timeout_ms": 60000,
                       "kafka": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                 "sasl.username": "orders-app", "sasl.password": "$(KAFKA_PASSWORD)"}},
            "extraEnv": [{"name": "KAFKA_PASSWORD",
                          "valueFrom": {"secretKeyRef": {"name": "kafka-credentials", "key": "password"}}}],
            "envFrom": [{"secretRef": {"name": "orders-app-secrets"}}],
        },
        "controlToken": {"existingSecret": "orders-control", "existingSecretKey": "bearer"},
        "imagePullSecrets": [{"name": "registry"}],
        "metrics": {"monitor": {"kind": "PodMonitor", "labels": {"release": "kube-prometheus-stack"}},
                    "prometheusRule": {"labels": {"release": "kube-prometheus-stack"}},
                    "dashboard": {"label": "grafana_dashboard_pyrallel", "labelValue": "yes"}},
        "keda": {"enabled": True, "partitions": 12, "maxReplicaCount": 12, "authenticationRef": "kafka-auth"},
        "argo": {"enabled": True, "color": "green"},
        "commonLabels": {"team": "payments"},
    },
}
CHART_OWNED_FIELDS = {
    "bootstrap_servers", "group_id", "topics", "pause_mode", "start_paused", "color", "instance_id", "control_port",
    "control_host", "control_token", "control_insecure", "metrics_port", "metrics_host", "log_format",
    "group_instance_id",
    # Not settable: its default derives it per pod (group + pod name); one value for every pod would have each
    # pod's transactional producer fence the others'.
    "transactional_id",
    # Not settable: the chart deploys PyrallelConsumers (consumer groups); a share group has no lifecycle API to
    # switch colors with.
    "group_type",
}


# ---- running Helm ------------------------------------------------------------------------------------------


class Helm:
    """The cached Helm v4 with its own cache/config/data folders (nothing of the user's Helm set-up is used)."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}
        self.env.pop("KUBECONFIG", None)

    def run(self, *args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        if values is not None:
            values_file = self.home / f"values-{uuid.uuid4().hex[:8]}.yaml"
            values_file.write_text(yaml.safe_dump(values))
            argv += ["--values", str(values_file)]
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=300, check=False)

    def ok(self, *args: str, values: dict[str, Any] | None = None) -> str:
        result = self.run(*args, values=values)
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def render(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        out = self.ok("template", RELEASE, str(CHART), "--namespace", "shop", values=values)
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def refusal(self, values: dict[str, Any]) -> str:
        result = self.run("template", RELEASE, str(CHART), values=values)
        assert result.returncode != 0, f"helm template accepted {values}"
        return result.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(ensure_k8s().helm, tmp_path_factory.mktemp("helm-home"))


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} named {name}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(workload).get("env", [])}


# ---- 1. lint and render ------------------------------------------------------------------------------------


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_strict_lint_passes(helm: Helm, combination: str) -> None:
    out = helm.ok("lint", "--strict", str(CHART), values=COMBINATIONS[combination])
    assert "1 chart(s) linted, 0 chart(s) failed" in out


EXPECTED_KINDS = {
    "plain": {"Deployment": 3, "ConsumerDeployment": 1, "Secret": 1, "Service": 1, "ServiceMonitor": 1,
              "PrometheusRule": 1, "ConfigMap": 1, "PodDisruptionBudget": 3, "ServiceAccount": 2, "Role": 1,
              "RoleBinding": 1, "NetworkPolicy": 0},
    "keda": {"Deployment": 3, "ScaledObject": 1},
    "strimzi": {"Deployment": 1, "KafkaConnect": 1, "KafkaConnector": 2, "ConsumerDeployment": 1, "NetworkPolicy": 1},
    "argo": {"Deployment": 1, "Rollout": 1, "AnalysisTemplate": 2, "Service": 3, "Role": 2, "RoleBinding": 2},
    "all": {"Deployment": 1, "Rollout": 1, "ScaledObject": 1, "PodMonitor": 1, "Secret": 0, "ServiceMonitor": 0},
}


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_template_renders_the_objects_of_the_combination(helm: Helm, combination: str) -> None:
    by_kind = kinds(helm.render(COMBINATIONS[combination]))
    counts = {kind: len(by_kind.get(kind, [])) for kind in EXPECTED_KINDS[combination]}
    assert counts == EXPECTED_KINDS[combination]
    for docs in by_kind.values():
        for doc in docs:
            labels = doc["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["pyrallel.io/deployment"] == FULLNAME


def test_each_color_runs_the_consumer_image_paused_with_its_own_color(helm: Helm) -> None:
    docs = helm.render(COMBINATIONS["plain"])
    token_refs = set()
    for color in ("blue", "green"):
        deployment = one(docs, "Deployment", f"{FULLNAME}-{color}")
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["labels"]["pyrallel.io/color"] == color
        assert deployment["spec"]["selector"]["matchLabels"]["pyrallel.io/color"] == color
        assert pod["metadata"]["labels"]["pyrallel.io/deployment"] == FULLNAME
        assert container(deployment)["image"] == "registry.example/orders-consumer:1.4.2"
        env = env_of(deployment)
        assert env["PYRALLEL_START_PAUSED"]["value"] == "true", "every pod comes up paused, whatever is active"
        assert env["PYRALLEL_COLOR"]["value"] == color
        assert env["PYRALLEL_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["PYRALLEL_CONTROL_HOST"]["value"] == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        assert ports == {"control": 8080, "metrics": 9400}
        assert env["PYRALLEL_CONTROL_PORT"]["value"] == "8080" and env["PYRALLEL_METRICS_PORT"]["value"] == "9400"
        ref = env["PYRALLEL_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"]
        token_refs.add((ref["name"], ref["key"]))
        assert container(deployment)["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "control"}
        assert container(deployment)["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "control"}
        # C: one group, partitions released on pause.
        assert env["PYRALLEL_GROUP_ID"]["value"] == FULLNAME
        assert env["PYRALLEL_PAUSE_MODE"]["value"] == "release"
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container(deployment)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
        assert security["allowPrivilegeEscalation"] is False
        assert spec["terminationGracePeriodSeconds"] >= 30 + 1, "longer than the 30 s drain"
        assert container(deployment)["resources"]["limits"]["memory"]
        pdb = one(docs, "PodDisruptionBudget", f"{FULLNAME}-{color}")
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    controller = one(docs, "Deployment", f"{FULLNAME}-controller")
    ref = env_of(controller)["PYRALLEL_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"]
    token_refs.add((ref["name"], ref["key"]))
    secret = one(docs, "Secret")
    assert token_refs == {(secret["metadata"]["name"], "token")}, "consumers and controller share one token"
    assert controller["spec"]["replicas"] == 2
    assert container(controller)["args"][:3] == ["controller", "serve", "--kubernetes"]


def _pod_environment(workload: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The environment a pod of this workload gets, as the kubelet builds it: field references resolved, Secret
    keys read, and $(NAME) in a value expanded from the entries above it (unknown references stay as they are)."""
    resolved: dict[str, str] = {}
    for entry in container(workload).get("env", []):
        if "value" in entry:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: resolved.get(m.group(1), m.group(0)), entry["value"])
        elif "fieldRef" in entry["valueFrom"]:
            value = {"metadata.name": "orders-blue-7d9f-abcde",
                     "metadata.namespace": "shop"}[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"], ref["key"]]
        resolved[entry["name"]] = value
    return resolved


def _config_from_env(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ConsumerConfig:
    """The ConsumerConfig the library builds from this environment alone."""
    monkeypatch.chdir(tmp_path)  # no .env file of the repository
    for name in [n for n in os.environ if n.startswith("PYRALLEL_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return ConsumerConfig()


def test_the_library_accepts_the_environment_the_chart_gives_a_pod(
        helm: Helm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = helm.render(COMBINATIONS["all"])
    rollout = one(docs, "Rollout")
    secrets = {("orders-control", "bearer"): TOKEN, ("kafka-credentials", "password"): "pa$$word"}
    config = _config_from_env(_pod_environment(rollout, secrets), monkeypatch, tmp_path)
    assert config.color == "green" and config.start_paused is True
    assert config.topics == ["orders"] and config.bootstrap_servers == _BASE["bootstrapServers"]
    assert config.group_id == f"{FULLNAME}-green" and config.pause_mode == "hold"
    assert config.instance_id == "orders-blue-7d9f-abcde"
    assert config.control_port == 8080 and config.control_host == "0.0.0.0"
    assert config.control_token is not None and config.control_token.get_secret_value() == TOKEN
    assert config.metrics_port == 9400 and config.metrics_host == "0.0.0.0" and config.log_format == "json"
    assert config.max_in_flight == 250 and config.queue_max_bytes == 134217728 and config.engine == "process"
    assert config.dlq_enabled is True
    assert config.kafka == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                            "sasl.username": "orders-app", "sasl.password": "pa$$word"}, "the Secret's password"
    assert rollout["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60 + 15


def test_strategy_b_gives_each_color_its_group_and_holds_partitions(helm: Helm) -> None:
    docs = helm.render(COMBINATIONS["keda"])
    cr = one(docs, "ConsumerDeployment")
    groups = {}
    for color in ("blue", "green"):
        env = env_of(one(docs, "Deployment", f"{FULLNAME}-{color}"))
        assert env["PYRALLEL_PAUSE_MODE"]["value"] == "hold"
        groups[color] = env["PYRALLEL_GROUP_ID"]["value"]
    assert groups == {"blue": f"{FULLNAME}-blue", "green": f"{FULLNAME}-green"}
    assert cr["spec"]["groups"] == groups, "the controller hands over between the groups the pods use"
    assert cr["spec"]["strategy"] == "B"


def test_the_custom_resource_carries_the_agreed_spec(helm: Helm) -> None:
    cr = one(helm.render(COMBINATIONS["plain"]), "ConsumerDeployment")
    assert cr["apiVersion"] == "pyrallel.io/v1alpha1" and cr["metadata"]["name"] == FULLNAME
    assert cr["spec"] == {
        "activeColor": "blue", "strategy": "C", "bootstrapServers": _BASE["bootstrapServers"], "controlPort": 8080,
        "health": {"windowSeconds": 5, "maxErrorRate": 0.2, "readyTimeoutSeconds": 30},
    }
    strimzi = helm.render(COMBINATIONS["strimzi"])
    connect = one(strimzi, "KafkaConnect")
    e_spec = one(strimzi, "ConsumerDeployment")["spec"]
    assert e_spec["connect"] == {
        "url": f"http://{connect['metadata']['name']}-connect-api.shop.svc:8083",
        "connectors": {"blue": f"{FULLNAME}-blue", "green": f"{FULLNAME}-green"},
    }


def test_keda_scales_only_the_active_color_and_never_beyond_the_partitions(helm: Helm) -> None:
    values = merged(COMBINATIONS["keda"], {"activeColor": "green"})
    docs = helm.render(values)
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": f"{FULLNAME}-green"}
    assert scaled["spec"]["maxReplicaCount"] == 8
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == f"{FULLNAME}-green"
    assert trigger["metadata"]["topic"] == "orders" and trigger["metadata"]["lagThreshold"] == "1000"
    assert "replicas" not in one(docs, "Deployment", f"{FULLNAME}-green")["spec"], "KEDA owns the count"
    assert one(docs, "Deployment", f"{FULLNAME}-blue")["spec"]["replicas"] == 2


def test_strimzi_runs_the_active_colors_connector_and_stops_the_other(helm: Helm) -> None:
    docs = helm.render(merged(COMBINATIONS["strimzi"], {"activeColor": "green"}))
    connectors = {d["metadata"]["labels"]["pyrallel.io/color"]: d for d in docs if d["kind"] == "KafkaConnector"}
    assert {c: d["spec"]["state"] for c, d in connectors.items()} == {"blue": "stopped", "green": "running"}
    connect = one(docs, "KafkaConnect")
    for color, connector in connectors.items():
        assert connector["metadata"]["labels"]["strimzi.io/cluster"] == connect["metadata"]["name"]
        assert connector["spec"]["config"] == {"topics": "orders", "file": f"/tmp/sink-{color}.txt"}
        assert connector["spec"]["class"] == "org.apache.kafka.connect.file.FileStreamSinkConnector"
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    workloads = [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in docs if d["kind"] == "Deployment"]
    assert workloads == ["controller"], "strategy E: the connectors consume, no consumer pods"
    rules = one(docs, "Role")["rules"]
    assert {"apiGroups": ["kafka.strimzi.io"], "resources": ["kafkaconnectors"],
            "resourceNames": [f"{FULLNAME}-blue", f"{FULLNAME}-green"], "verbs": ["get", "patch"]} in rules


def test_argo_rollout_gates_promotion_on_health_and_promotes_through_the_custom_resource(helm: Helm) -> None:
    docs = helm.render(COMBINATIONS["all"])
    rollout = one(docs, "Rollout")
    assert not [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(("-blue", "-green"))]
    assert rollout["spec"]["template"]["metadata"]["labels"]["pyrallel.io/color"] == "green"
    assert env_of(rollout)["PYRALLEL_START_PAUSED"]["value"] == "true"
    blue_green = rollout["spec"]["strategy"]["blueGreen"]
    assert "scaleDownDelaySeconds" not in blue_green, "the old color goes only after the switch completed"
    templates = {t["metadata"]["name"]: t for t in docs if t["kind"] == "AnalysisTemplate"}
    commands = {}
    for phase in ("prePromotionAnalysis", "postPromotionAnalysis"):
        analysis = blue_green[phase]
        assert analysis["args"] == [{"name": "color", "value": "green"}]
        template = templates[analysis["templates"][0]["templateName"]]
        job = template["spec"]["metrics"][0]["provider"]["job"]["spec"]
        assert job["backoffLimit"] == 0
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (job_container,) = pod["containers"]
        assert job_container["image"] == "pyrallel-tools:0.1.0"
        commands[phase] = " ".join([*job_container["command"], *job_container["args"]])
        env = {e["name"]: e for e in job_container["env"]}
        assert env["PYRALLEL_LOG_FORMAT"]["value"] == "json", "the Jobs' logs are JSON like the controller's"
        # Neither command talks to Kafka; only health calls the pods' control APIs and needs the token.
        assert set(env) == ({"PYRALLEL_LOG_FORMAT", "PYRALLEL_CONTROL_TOKEN"} if phase == "prePromotionAnalysis"
                            else {"PYRALLEL_LOG_FORMAT"})
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert job_container["securityContext"]["readOnlyRootFilesystem"] is True
    color_arg = "{{args.color}}"  # filled in by Argo from the analysis args above
    assert commands == {
        "prePromotionAnalysis":
            f"pyrallel controller health --kubernetes --deployment {FULLNAME} --namespace shop --color {color_arg}",
        "postPromotionAnalysis":
            f"pyrallel controller set-active --deployment {FULLNAME} --namespace shop --color {color_arg} --wait 120",
    }
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                                "name": FULLNAME}
    # The analysis account can read pods (health) and get/patch the one ConsumerDeployment (set-active patches
    # the spec and polls the status with get), nothing else.
    analysis_role = one(docs, "Role", f"{FULLNAME}-analysis")
    assert analysis_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["pyrallel.io"], "resources": ["consumerdeployments"], "resourceNames": [FULLNAME],
         "verbs": ["get", "patch"]},
    ]


def test_controller_role_is_least_privilege(helm: Helm) -> None:
    role = one(helm.render(COMBINATIONS["plain"]), "Role", f"{FULLNAME}-controller")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["pyrallel.io"], "resources": ["consumerdeployments"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["pyrallel.io"], "resources": ["consumerdeployments/status"], "verbs": ["get", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [lease_name(FULLNAME)], "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]


def _parse_cli(argv: list[str]) -> dict[str, Any]:
    """The options the ``pyrallel`` CLI parses from this command line (types, choices and required options checked,
    nothing run)."""
    command: click.Command = cli
    parent: click.Context | None = None
    args = list(argv)
    while isinstance(command, click.Group):  # the chart passes no group option: the sub-command comes first
        ctx = click.Context(command, info_name=command.name, parent=parent)
        name, sub, args = command.resolve_command(ctx, args)
        assert sub is not None, name
        command, parent = sub, ctx
    return dict(command.make_context(command.name or "", args, parent=parent).params)


def test_the_pyrallel_cli_takes_the_arguments_the_chart_runs_it_with(
        helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's and the analysis Jobs' command lines, as rendered, parse with the real CLI."""
    monkeypatch.setenv("PYRALLEL_CONTROL_TOKEN", TOKEN)
    docs = helm.render(COMBINATIONS["all"])
    controller = container(one(docs, "Deployment", f"{FULLNAME}-controller"))
    assert controller["command"] == ["pyrallel"]
    serve = _parse_cli(controller["args"])
    assert serve["kubernetes"] is True and serve["deployment"] == FULLNAME and serve["namespace"] == "shop"
    for template in (d for d in docs if d["kind"] == "AnalysisTemplate"):
        (job,) = template["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"]
        params = _parse_cli([arg.replace("{{args.color}}", "green") for arg in job["args"]])
        assert params["deployment"] == FULLNAME and params["namespace"] == "shop" and params["color"] == "green"


def _cli_group_params(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options of the ``pyrallel`` group itself (``--log-format``, ``-v``) as the real CLI reads them from this
    environment alone."""
    for name in [n for n in os.environ if n.startswith("PYRALLEL_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return dict(cli.make_context("pyrallel", ["controller"]).params)


def _analysis_jobs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod specs of the Argo analysis Jobs."""
    return [t["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]
            for t in docs if t["kind"] == "AnalysisTemplate"]


def test_the_controller_and_the_analysis_jobs_log_json(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented controller LogQL (`| json | event=...`) needs JSON lines: the rendered environment makes the
    real CLI log JSON, and controller.logFormat=text makes it plain again."""
    docs = helm.render(COMBINATIONS["all"])
    environments = [{n: e["value"] for n, e in env_of(one(docs, "Deployment", f"{FULLNAME}-controller")).items()
                     if "value" in e}]
    environments += [{e["name"]: e["value"] for e in job["containers"][0]["env"] if "value" in e}
                     for job in _analysis_jobs(docs)]
    assert len(environments) == 3
    for environment in environments:
        assert environment["PYRALLEL_LOG_FORMAT"] == "json"
        assert _cli_group_params(environment, monkeypatch)["log_format"] == "json"
    text = merged(COMBINATIONS["all"], {"controller": {"logFormat": "text"}})
    controller = one(helm.render(text), "Deployment", f"{FULLNAME}-controller")
    assert env_of(controller)["PYRALLEL_LOG_FORMAT"]["value"] == "text"


def test_the_controller_pod_outlives_a_switch_and_a_drain(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRALLEL_CONTROL_TOKEN", TOKEN)
    docs = helm.render(COMBINATIONS["plain"])
    deployment = one(docs, "Deployment", f"{FULLNAME}-controller")
    pod, controller = deployment["spec"]["template"], container(deployment)
    # serve --kubernetes takes the brokers from the ConsumerDeployment's spec.bootstrapServers.
    assert "PYRALLEL_BOOTSTRAP_SERVERS" not in env_of(deployment)
    # Liveness: the metrics server the real CLI starts from these arguments, on the port named "metrics".
    serve = _parse_cli(controller["args"])
    assert serve["metrics_port"] == 9400 and serve["host"] == "0.0.0.0"
    assert controller["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert controller["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert "readinessProbe" not in controller, "no Service sends the controller traffic"
    # SIGTERM: the leader finishes a running switch (steps of up to 60 s, the health window, the 30 s gap bound).
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace == 180 and grace > 2 * 60 + COMBINATIONS["plain"].get("health", {}).get("windowSeconds", 5) + 30
    # The two replicas on different nodes when possible, and never both evicted by a drain.
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget", f"{FULLNAME}-controller")
    assert pdb["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    # No metrics port: no HTTP endpoint at all in --kubernetes mode, hence no probe. One replica: no PDB (it would
    # block every drain).
    bare = helm.render(merged(COMBINATIONS["plain"], {"controller": {"metricsPort": None, "replicas": 1}}))
    bare_controller = container(one(bare, "Deployment", f"{FULLNAME}-controller"))
    assert "livenessProbe" not in bare_controller and "ports" not in bare_controller
    assert _parse_cli(bare_controller["args"])["metrics_port"] is None
    assert not [d for d in bare if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("-controller")]


def test_the_controller_and_jobs_have_their_own_security_context(helm: Helm) -> None:
    values = merged(COMBINATIONS["argo"], {"controller": {
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 20002, "runAsGroup": 20002},
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "privileged": False}}})
    docs = helm.render(values)
    consumer_pod = one(docs, "Rollout")["spec"]["template"]["spec"]
    assert consumer_pod["securityContext"]["runAsUser"] == 10001, "the consumers keep consumer.podSecurityContext"
    controller_pod = one(docs, "Deployment", f"{FULLNAME}-controller")["spec"]["template"]["spec"]
    for pod in (controller_pod, *_analysis_jobs(docs)):
        assert pod["securityContext"]["runAsUser"] == 20002
        assert pod["containers"][0]["securityContext"]["privileged"] is False


def test_every_read_only_container_has_a_writable_tmp(helm: Helm) -> None:
    """readOnlyRootFilesystem everywhere, and /tmp an emptyDir in every pod (the only place anything may write)."""
    docs = helm.render(COMBINATIONS["all"])
    pods = [one(docs, "Rollout")["spec"]["template"]["spec"],
            one(docs, "Deployment", f"{FULLNAME}-controller")["spec"]["template"]["spec"], *_analysis_jobs(docs)]
    for pod in pods:
        (box,) = pod["containers"]
        assert box["securityContext"]["readOnlyRootFilesystem"] is True
        (mount,) = [m for m in box["volumeMounts"] if m["mountPath"] == "/tmp"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume == {"name": mount["name"], "emptyDir": {}}


def test_strimzi_lets_the_controller_reach_the_connect_rest_api(helm: Helm) -> None:
    """Strimzi's own NetworkPolicy on the Connect pods admits only the Cluster Operator and Connect itself to 8083;
    the chart's policy (policies add up) admits the controller's pods too."""
    docs = helm.render(COMBINATIONS["strimzi"])
    connect = one(docs, "KafkaConnect")["metadata"]["name"]
    assert one(docs, "ConsumerDeployment")["spec"]["connect"]["url"].endswith(":8083")
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"strimzi.io/cluster": connect,
                                                             "strimzi.io/kind": "KafkaConnect"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8083, "protocol": "TCP"}]
    controller_labels = one(docs, "Deployment", f"{FULLNAME}-controller")["spec"]["template"]["metadata"]["labels"]
    same_namespace = [p["podSelector"]["matchLabels"] for p in rule["from"] if "namespaceSelector" not in p]
    assert any(labels.items() <= controller_labels.items() for labels in same_namespace), "the controller's pods"
    assert {"strimzi.io/cluster": connect, "strimzi.io/kind": "KafkaConnect"} in same_namespace, "Connect itself"
    assert {"podSelector": {"matchLabels": {"strimzi.io/kind": "cluster-operator"}}, "namespaceSelector": {}} \
        in rule["from"], "the Cluster Operator, wherever it runs"
    off = helm.render(merged(COMBINATIONS["strimzi"], {"strimzi": {"networkPolicy": {"enabled": False}}}))
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]


def test_alerts_and_dashboard_come_from_the_one_copy_in_the_chart(helm: Helm) -> None:
    monitoring = ROOT / "deploy" / "monitoring"
    for name in ("alerts.yml", "grafana-dashboard.json"):
        link = monitoring / name
        assert link.is_symlink() and not os.readlink(link).startswith("/"), f"{link} is a relative symlink"
        assert link.resolve() == (CHART / "files" / name).resolve()
    docs = helm.render(COMBINATIONS["all"])
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((CHART / "files" / "alerts.yml").read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = one(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard_pyrallel"] == "yes"
    (content,) = dashboard["data"].values()
    assert json.loads(content) == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    plain_dashboard = one(helm.render(COMBINATIONS["plain"]), "ConfigMap")
    assert plain_dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_metrics_reach_every_pod_of_both_colors(helm: Helm) -> None:
    docs = helm.render(COMBINATIONS["plain"])
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    selector = service["spec"]["selector"]
    for color in ("blue", "green"):
        labels = one(docs, "Deployment", f"{FULLNAME}-{color}")["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["spec"]["endpoints"][0]["honorLabels"]


# ---- 2. values.schema.json and render-time checks ---------------------------------------------------------------


@pytest.mark.parametrize(("bad", "named"), [
    ({"activeColor": "purple"}, "/activeColor"),
    ({"strategy": "X"}, "/strategy"),
    ({"consumer": {"controlPort": 70000}}, "/consumer/controlPort"),
    ({"argo": {"color": "red"}}, "/argo/color"),
    ({"keda": {"enabled": True, "partitions": 4, "maxReplicaCount": 8}}, "keda.maxReplicaCount (8) must not exceed"),
    ({"keda": {"enabled": True}}, "partitions"),
    ({"consumer": {"contolPort": 8081}}, "'contolPort' not allowed"),
    ({"consumer": {"config": {"max_inflight": 10}}}, "'max_inflight' not allowed"),
    ({"consumer": {"config": {"max_in_flight": 0}}}, "/consumer/config/max_in_flight"),
    ({"consumer": {"config": {"group_id": "mine"}}}, "'group_id' not allowed"),
    ({"consumer": {"config": {"kafka": {"session.timeout.ms": 30000}}}}, "/consumer/config/kafka/session.timeout.ms"),
    ({"consumer": {"extraEnv": [{"name": "PYRALLEL_COLOR", "value": "green"}]}}, "PYRALLEL_COLOR is already set"),
    ({"image": {"repository": ""}}, "image.repository is required"),
    ({"bootstrapServers": "kafka:port"}, "/bootstrapServers"),
    ({"metrics": {"monitor": {"kind": "Probe"}}}, "/metrics/monitor/kind"),
    ({"argo": {"enabled": True, "scaleDownDelaySeconds": 60}}, "argo.scaleDownDelaySeconds (60) must exceed"),
    ({"argo": {"enabled": True, "color": "green"}}, "argo.color (green) must equal activeColor (blue)"),
    ({"strategy": "E", "keda": {"enabled": True, "partitions": 4}, "connect": {"url": "http://connect:8083"}},
     "keda.enabled needs strategy B or C"),
])
def test_a_bad_value_is_refused_with_its_name(helm: Helm, bad: dict[str, Any], named: str) -> None:
    assert named in helm.refusal(merged(COMBINATIONS["plain"], bad))


def _field_schema(field: Any) -> dict[str, Any]:
    """What values.schema.json must say about a ConsumerConfig field (type, bounds, choices)."""
    annotation = field.annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if str in members:
        members = [str]  # e.g. a deserializer: in the chart only its 'module:attr' form, which a pod imports
    if type(None) in typing.get_args(annotation):
        (annotation,) = members
    bounds = {type(m).__name__: m for m in field.metadata}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"type": "string", "enum": [m.value for m in annotation]}
    if typing.get_origin(annotation) is typing.Literal:
        return {"type": "string", "enum": list(typing.get_args(annotation))}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer", "minimum": bounds["Ge"].ge, "maximum": bounds["Le"].le}
    if typing.get_origin(annotation) is dict:
        return {"type": "object", "additionalProperties": {"type": "string"}}
    assert annotation is str, field
    return {"type": "string", **({"minLength": bounds["MinLen"].min_length} if "MinLen" in bounds else {}),
            **({"maxLength": bounds["MaxLen"].max_length} if "MaxLen" in bounds else {})}


def test_consumer_config_in_the_schema_follows_ConsumerConfig() -> None:
    """Every ConsumerConfig field the chart does not set itself is a consumer.config key with the model's rules,
    so a value the library would refuse at start is refused by helm install already."""
    schema = json.loads(SCHEMA.read_text())
    config = schema["properties"]["consumer"]["properties"]["config"]
    assert config["additionalProperties"] is False
    fields = ConsumerConfig.model_fields
    assert set(config["properties"]) == set(fields) - CHART_OWNED_FIELDS
    for name, rule in config["properties"].items():
        expected = _field_schema(fields[name])
        assert {k: v for k, v in rule.items() if k in expected} == expected, name


# ---- 3. installed with Helm on the real API server ----------------------------------------------------------


@pytest.fixture
def install(helm: Helm, k8s_api: LocalApiServer) -> Iterator[Callable[..., tuple[str, str]]]:
    """``install(values, namespace=None, upgrade=False)``: helm install (or upgrade) into a namespace of the test's
    own on the real API server; returns (namespace, helm's output)."""
    own: list[str] = []

    def run(values: dict[str, Any], namespace: str | None = None, upgrade: bool = False) -> tuple[str, str]:
        if namespace is None:
            namespace = f"chart-{uuid.uuid4().hex[:8]}"
            own.append(namespace)
        action = ["upgrade", RELEASE] if upgrade else ["install", RELEASE]
        out = helm.ok(*action, str(CHART), "--kubeconfig", str(k8s_api.kubeconfig), "--namespace", namespace,
                      "--create-namespace", "--timeout", "120s", values=values)
        return namespace, out

    yield run
    for namespace in own:  # no namespace controller runs here: the namespaces stay until the server is removed
        helm.run("uninstall", RELEASE, "--kubeconfig", str(k8s_api.kubeconfig), "--namespace", namespace)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_object_is_accepted_by_the_api_server(
        install: Callable[..., tuple[str, str]], k8s_api: LocalApiServer, helm: Helm, combination: str) -> None:
    values = COMBINATIONS[combination]
    namespace, out = install(values)
    assert "STATUS: deployed" in out
    client = k8s_api.client(namespace)
    rendered = helm.render(values)
    manifest = helm.ok("get", "manifest", RELEASE, "--kubeconfig", str(k8s_api.kubeconfig), "--namespace", namespace)
    applied = [doc for doc in yaml.safe_load_all(manifest) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in applied) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in rendered)
    cr = client.get(ConsumerDeployment, FULLNAME)
    assert cr["spec"]["activeColor"] == values.get("activeColor", "blue")
    assert cr["spec"]["strategy"] == values.get("strategy", "C")
    if combination == "plain":
        assert client.get(PodDisruptionBudget, f"{FULLNAME}-controller").spec.minAvailable == 1  # type: ignore[union-attr]
        blue = client.get(Deployment, f"{FULLNAME}-blue")
        assert blue.spec is not None and blue.spec.template.metadata is not None
        assert (blue.spec.template.metadata.labels or {})["pyrallel.io/color"] == "blue"
        assert client.get(PrometheusRule, FULLNAME)["spec"]["groups"]
    if combination in ("keda", "all"):
        assert client.get(ScaledObject, FULLNAME)["spec"]["maxReplicaCount"] == values["keda"]["maxReplicaCount"]
    if combination == "strimzi":
        states = {c: client.get(KafkaConnector, f"{FULLNAME}-{c}")["spec"]["state"] for c in ("blue", "green")}
        assert states == {"blue": "running", "green": "stopped"}
        policy = client.get(NetworkPolicy, f"{FULLNAME}-connect-controller-access")
        assert policy.spec is not None and policy.spec.ingress is not None
        assert [p.port for p in policy.spec.ingress[0].ports or []] == [8083]
    if combination in ("argo", "all"):
        rollout = client.get(Rollout, FULLNAME)
        assert rollout["spec"]["strategy"]["blueGreen"]["activeService"] == f"{FULLNAME}-active"
        assert client.get(AnalysisTemplate, f"{FULLNAME}-analysis-health")["spec"]["args"] == [{"name": "color"}]
        assert client.get(Service, f"{FULLNAME}-preview")
    if combination == "all":
        assert client.get(PodMonitor, FULLNAME)["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def request_switch(client: Any, color: str) -> None:
    """What `kubectl patch consumerdeployment NAME --type merge -p '{"spec":{"activeColor":COLOR}}'` does."""
    client.patch(ConsumerDeployment, FULLNAME, {"spec": {"activeColor": color}}, patch_type=PatchType.MERGE,
                 field_manager="kubectl-patch")


def test_an_upgrade_keeps_the_active_color_an_operator_switched_to(
        install: Callable[..., tuple[str, str]], k8s_api: LocalApiServer) -> None:
    values = COMBINATIONS["keda"]
    namespace, _ = install(values)
    client = k8s_api.client(namespace)
    token = client.get(Secret, f"{FULLNAME}-control-token").data
    assert client.get(ScaledObject, FULLNAME)["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-blue"
    request_switch(client, "green")
    install(merged(values, {"consumer": {"config": {"max_in_flight": 300}}}), namespace=namespace, upgrade=True)
    assert client.get(ConsumerDeployment, FULLNAME)["spec"]["activeColor"] == "green"
    assert client.get(ScaledObject, FULLNAME)["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-green"
    green = client.get(Deployment, f"{FULLNAME}-green")
    assert green.spec is not None
    env = {e.name: e.value for e in green.spec.template.spec.containers[0].env or []}  # type: ignore[union-attr]
    assert env["PYRALLEL_MAX_IN_FLIGHT"] == "300" and env["PYRALLEL_START_PAUSED"] == "true"
    assert client.get(Secret, f"{FULLNAME}-control-token").data == token, "the generated token is kept"


def test_an_upgrade_keeps_the_state_the_controller_gave_a_connector(
        install: Callable[..., tuple[str, str]], k8s_api: LocalApiServer) -> None:
    values = COMBINATIONS["strimzi"]
    namespace, _ = install(values)
    client = k8s_api.client(namespace)
    # Mid-switch to green: the controller has stopped blue and not yet resumed green.
    request_switch(client, "green")
    client.patch(KafkaConnector, f"{FULLNAME}-blue", {"spec": {"state": "stopped"}},
                 patch_type=PatchType.MERGE, field_manager="controller")
    install(values, namespace=namespace, upgrade=True)
    states = {c: client.get(KafkaConnector, f"{FULLNAME}-{c}")["spec"]["state"] for c in ("blue", "green")}
    assert states == {"blue": "stopped", "green": "stopped"}, "helm upgrade restarted no connector"


def test_an_argo_upgrade_that_keeps_the_active_color_warns(
        install: Callable[..., tuple[str, str]]) -> None:
    """An upgrade with argo.color still the live active color rolls new pods into the active color without a gate:
    the notes warn (the upgrade itself succeeds); an upgrade that flips argo.color does not warn."""
    values = COMBINATIONS["argo"]
    namespace, out = install(values)
    assert "WARNING" not in out
    _, out = install(merged(values, {"image": {"tag": "1.5.0"}}), namespace=namespace, upgrade=True)
    assert "STATUS: deployed" in out and "WARNING: argo.color=blue is the ACTIVE color" in out
    assert "--set argo.color=green" in out
    _, out = install(merged(values, {"image": {"tag": "1.5.0"}, "argo": {"color": "green"}}), namespace=namespace,
                     upgrade=True)
    assert "STATUS: deployed" in out and "WARNING" not in out


def _allowed(client: Any, namespace: str, account: str, verb: str, resource: str, group: str = "",
             name: str | None = None, subresource: str | None = None, in_namespace: str | None = None) -> bool:
    """Whether the API server's RBAC lets the service account ``account`` of ``namespace`` do this."""
    review = client.create(SubjectAccessReview(spec=SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{namespace}:{account}",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        resourceAttributes=ResourceAttributes(namespace=in_namespace or namespace, verb=verb, group=group,
                                              resource=resource, name=name, subresource=subresource))))
    return bool(review.status.allowed)


def test_the_installed_rbac_grants_the_controller_and_analysis_jobs_only_what_they_need(
        install: Callable[..., tuple[str, str]], k8s_api: LocalApiServer) -> None:
    namespace, _ = install(COMBINATIONS["argo"])
    client = k8s_api.client(namespace)
    controller, analysis = f"{FULLNAME}-controller", f"{FULLNAME}-analysis"
    lease = lease_name(FULLNAME)

    def can(account: str, verb: str, resource: str, group: str = "", **kw: Any) -> bool:
        return _allowed(client, namespace, account, verb, resource, group, **kw)

    assert can(controller, "watch", "pods")
    assert can(controller, "watch", "consumerdeployments", "pyrallel.io")
    assert can(controller, "patch", "consumerdeployments", "pyrallel.io", name=FULLNAME, subresource="status")
    assert not can(controller, "patch", "consumerdeployments", "pyrallel.io", name=FULLNAME), "never the spec"
    assert not can(controller, "update", "consumerdeployments", "pyrallel.io", name=FULLNAME, subresource="status")
    assert can(controller, "create", "leases", "coordination.k8s.io")
    assert can(controller, "update", "leases", "coordination.k8s.io", name=lease)
    assert can(controller, "create", "events")
    assert not can(controller, "patch", "events")
    assert not can(controller, "create", "events", "events.k8s.io")
    assert not can(controller, "update", "leases", "coordination.k8s.io", name="someone-elses-lease")
    assert not can(controller, "delete", "pods")
    assert not can(controller, "get", "secrets", name=f"{FULLNAME}-control-token")
    assert not can(controller, "delete", "consumerdeployments", "pyrallel.io", name=FULLNAME)
    assert not _allowed(client, namespace, controller, "list", "pods", in_namespace="kube-system"), "namespaced"
    assert can(analysis, "patch", "consumerdeployments", "pyrallel.io", name=FULLNAME)
    assert can(analysis, "get", "consumerdeployments", "pyrallel.io", name=FULLNAME)
    assert not can(analysis, "watch", "consumerdeployments", "pyrallel.io", name=FULLNAME)
    assert can(analysis, "list", "pods")
    assert not can(analysis, "patch", "consumerdeployments", "pyrallel.io", name="another-deployment")
    assert not can(analysis, "update", "consumerdeployments", "pyrallel.io", name=FULLNAME, subresource="status")
    assert not can(analysis, "delete", "pods")


# ---- the tooling image's Dockerfile (not built here: no base image can be pulled) -----------------------------


def test_the_dockerfile_copies_what_exists_and_runs_as_the_charts_non_root_user(helm: Helm) -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    copied = [part for line in lines if line.startswith("COPY ") for part in line.split()[1:-1]]
    assert copied, "the Dockerfile copies the packages"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
    assert any(line.startswith("RUN pip install") and '".[kubernetes]"' in line and "./tools" in line for line in lines)
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    pod = one(helm.render(COMBINATIONS["plain"]), "Deployment", f"{FULLNAME}-controller")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert user == f"{context['runAsUser']}:{context['runAsGroup']}" and context["runAsNonRoot"] is True
