"""``pyrallel bench --suite batch`` without a broker: its tables and its command line."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from click.testing import CliRunner

from pyrallel_tools.benchmark.batch import BatchPlan, BatchReport, Latency, Throughput, markdown
from pyrallel_tools.cli.bench_cmd import bench

pytestmark = pytest.mark.unit


def test_tables_show_the_ratio_per_connection_limit_and_the_latency_per_linger() -> None:
    report = BatchReport(asdict(BatchPlan(connections=(10,), lingers_ms=(20,))))
    report.throughput = [Throughput("per-record", 10, 20_000, 1_950.0), Throughput("batch", 10, 30_000, 48_000.0, 99.5)]
    report.ratios = {"10": 24.6}
    report.latency = [Latency("per-record", None, 9_500, 5.6, 9.1, 20.0),
                      Latency("batch", 20, 9_500, 21.0, 32.5, 40.0, 19.8)]
    table = markdown(report)
    assert "| 10 | 1,950 | 48,000 | 99.5 | 24.6x |" in table
    assert "| batch | 20 ms | 19.8 | 21.0 | 32.5 | 40.0 | 9,500 |" in table
    assert "| per-record | - | - | 5.6 | 9.1 | 20.0 | 9,500 |" in table


def test_cli_refuses_other_suites_options_and_needs_a_bootstrap() -> None:
    runner = CliRunner(env={"PYRALLEL_BOOTSTRAP_SERVERS": ""})
    result = runner.invoke(bench, ["--suite", "batch", "--kafka", "a=b"])
    assert result.exit_code == 2 and "do not apply to --suite batch" in result.output
    result = runner.invoke(bench, ["--suite", "batch"])
    assert result.exit_code == 2 and "--bootstrap-servers" in result.output
