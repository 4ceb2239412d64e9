"""promtool, Prometheus's checker of scrape configs, rule files and rule unit tests, built once into the cache.

``tests/unit/test_monitoring_rules.py`` runs it over ``deploy/monitoring`` (and so over the rules the Helm chart
turns into a ``PrometheusRule``). Built from the Go module proxy like the other Go tools of the test bed, so that
``make test`` needs no system package and no root: Prometheus publishes its Go module as ``v0.3XY.Z`` for release
``v3.XY.Z``; the ldflags stamp the release into ``promtool --version``.
"""

from __future__ import annotations

from pathlib import Path

from pyrallel_tools.gobuild import GoBuild, ensure_go_tools

PROMETHEUS_RELEASE = "3.16.0"
PROMETHEUS_MODULE_VERSION = "v0.316.0"
"""The Go module version of ``PROMETHEUS_RELEASE`` (``v0.3XY.Z`` for ``v3.XY.Z``)."""


def ensure_promtool() -> Path:
    """The path of ``promtool``, built with ``go install`` into ``<cache>/promtool-<release>/bin`` the first time
    (~6 min cold on two cores). Called by ``make promtool`` (a prerequisite of ``make test``) and by the tests."""
    build = GoBuild("promtool", [
        "go", "install", "-trimpath",
        f"-ldflags=-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_RELEASE}",
        f"github.com/prometheus/prometheus/cmd/promtool@{PROMETHEUS_MODULE_VERSION}",
    ], output="promtool")
    return ensure_go_tools(f"promtool-{PROMETHEUS_RELEASE}", [build], f"promtool {PROMETHEUS_RELEASE}") / "promtool"
