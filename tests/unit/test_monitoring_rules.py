"""deploy/monitoring is valid and consistent: promtool accepts the scrape config and the rules, every alert
passes its fire and no-fire unit tests, and the dashboard is well formed and queries only metrics that exist.

promtool is built from the Go module proxy into the cache (``make promtool``, ``pyrallel_tools.promtool``); these tests
fail, never skip, when it cannot be built.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.promtool import ensure_promtool

pytestmark = pytest.mark.unit

MONITORING = Path(__file__).parents[2] / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = ("ConsumerStuck", "TrueLagGrowing", "DLQRateHigh", "DualActiveConsumers")
BLUE_GREEN_METRICS = {  # produced by the blue/green controller (another component), not by the consumer
    f"{base}_{suffix}" for base in ("bg_switch_duration_seconds", "bg_rollback_duration_seconds")
    for suffix in ("bucket", "sum", "count")
}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                    "group_right"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        path = ensure_promtool()
    except LocalKafkaError as exc:
        pytest.fail(f"promtool could not be built (`make promtool`): {exc}")
    return subprocess.run([str(path), *args], cwd=MONITORING, input=stdin, capture_output=True, text=True, timeout=120)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}{result.stderr}"


def consumer_registry() -> CollectorRegistry:
    config = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"])

    async def handle(_record: object) -> None:
        return None

    return PyrallelConsumer(config, handle).metrics_registry


def exported_names() -> set[str]:
    """The sample names a consumer exposes (per-partition ones too: described even when no partition is assigned)."""
    return {family.name + suffix for family in consumer_registry().collect() for suffix in _SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label matchers, ranges and
    grouping clauses that are neither functions nor keywords."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {name for name in names if name not in _PROMQL_KEYWORDS}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


# ---- promtool ---------------------------------------------------------------------------------------------


def test_promtool_accepts_the_scrape_config_and_the_rule_files_it_loads() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert_ok(result)
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_rules_and_every_alert_is_there() -> None:
    assert_ok(promtool("check", "rules", "alerts.yml"))
    rules = (MONITORING / "alerts.yml").read_text()
    assert set(re.findall(r"^\s*- alert: (\w+)", rules, re.MULTILINE)) == set(ALERTS)


def test_every_alert_passes_its_fire_and_no_fire_unit_tests() -> None:
    tests = (MONITORING / "alerts_test.yml").read_text()
    for alert in ALERTS:
        cases = re.findall(rf"alertname: {alert}\n\s*exp_alerts:(.*)", tests)
        assert "" in cases and " []" in cases, f"{alert} needs a case that fires and one that does not"
    assert_ok(promtool("test", "rules", "alerts_test.yml"))


def test_the_exposition_passes_promtool_lint() -> None:
    assert_ok(promtool("check", "metrics", stdin=generate_latest(consumer_registry()).decode()))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, loaded by promtool as a recording rule."""
    rules = [
        {"record": f"dashboard:panel_{panel['id']}_{target['refId']}",
         "expr": target["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h")}
        for panel in query_panels() for target in panel["targets"]
    ]
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    assert_ok(promtool("check", "rules", str(rule_file)))


# ---- dashboard and rules against the exporter -------------------------------------------------------------


def test_dashboard_structure() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"]

    titles = {p["title"]: p for p in board["panels"]}
    for title in ("Throughput", "Kafka lag vs true lag", "Blocking offset age", "In-flight vs capacity",
                  "Handler latency", "Rebalances", "Errors and dead letters", "Blue/green", "Active color",
                  "Lifecycle state per instance", "Switch and rollback durations"):
        assert title in titles, f"missing panel {title!r}"
    assert all("histogram_quantile(" in t["expr"] for t in titles["Handler latency"]["targets"])
    switch_exprs = " ".join(t["expr"] for t in titles["Switch and rollback durations"]["targets"])
    assert "bg_switch_duration_seconds_bucket" in switch_exprs and "bg_rollback_duration_seconds_bucket" in switch_exprs


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, job) (rate(a_seconds_bucket{job=~"$job", x="b_c"}[5m])))'
            " / on (job) group_left b_total and c > bool 1e3 + d[$__rate_interval]")
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}


def test_the_dashboard_queries_only_metrics_the_exporter_produces() -> None:
    exported = exported_names()
    assert {"pyrallel_true_lag", "pyrallel_records_completed_total", "kafka_consumer_lifecycle_state",
            "pyrallel_handler_duration_seconds_bucket"} <= exported
    for panel in query_panels():
        for target in panel["targets"]:
            unknown = metric_names(target["expr"]) - exported - BLUE_GREEN_METRICS
            assert not unknown, f"panel {panel['title']!r} queries {unknown}, which nothing exports"


def rule_expressions(text: str) -> list[str]:
    """The ``expr:`` values of a rule file, inline or ``|`` blocks (the file's own style; no YAML library)."""
    exprs, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr: (.*)$", line)
        if match is None:
            continue
        indent, value = len(match.group(1)), match.group(2)
        if value.strip() == "|":
            block = []
            for following in lines[i + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following)
            value = "\n".join(block)
        exprs.append(value)
    return exprs


def test_the_rules_use_only_metrics_the_exporter_produces() -> None:
    rules = (MONITORING / "alerts.yml").read_text()
    exprs = rule_expressions(rules)
    assert len(exprs) == len(ALERTS) + 1, "four alerts and the consumption rate recording rule"
    exported = exported_names()
    for expr in exprs:
        assert metric_names(expr), expr
        assert not metric_names(expr) - exported, f"{expr!r} queries metrics nothing exports"


def test_the_operations_guide_lists_every_metric_the_exporter_produces_and_no_other() -> None:
    """docs/operations.md's metrics table, one row per metric as a user queries it (``_total`` on counters)."""
    table = (MONITORING.parents[1] / "docs" / "operations.md").read_text().split("## Metrics", 1)[1]
    documented = set(re.findall(r"^\| `(\w+)` \| (?:counter|gauge|histogram) \|", table, re.MULTILINE))
    exported = {family.name + ("_total" if family.type == "counter" else "")
                for family in consumer_registry().collect()}
    assert documented == exported
