"""``pyrallel bench --suite scale`` without a broker: its plan, how a group's instances add up, the table, the JSON
round trip, the plots and the command line. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrallel_tools.benchmark.measure import Outcome
from pyrallel_tools.benchmark.scale import ScalePlan, counted_span, fill_measure
from pyrallel_tools.benchmark.scale_report import ScaleMeasure, ScaleReport, markdown
from pyrallel_tools.cli.bench_cmd import bench

pytestmark = pytest.mark.unit


def test_the_curves_cross_at_one_base_point_measured_once_and_topics_stay_bounded() -> None:
    plan = ScalePlan()
    curves = plan.curves()
    base = "p8-k10000-v64"
    assert [x for x, _ in curves["partitions"]] == [8, 64, 512]
    assert all(base in [point for _, point in curves[c]] for c in ("partitions", "keys", "value_bytes"))
    points = plan.points()
    ids = [p.id for p in points]
    assert len(ids) == len(set(ids)) and ids.count(base) == 1
    records = {p.id: p.topic.records for p in points}
    assert records[base] == 200_000
    assert records["p8-k1000000-v64"] == 1_000_000  # every key occurs
    assert records["p8-k10000-v4096"] == 65_536 and records["p8-k10000-v65536"] == 4_096  # 256 MiB of values
    # the backlog and the instances read one topic: produced once, so its points follow each other
    shared = [p for p in points if p.topic.partitions == 16]
    assert [p.id for p in shared] == ["backlog", "instances-1", "instances-2", "instances-4"]
    assert ids[-4:] == [p.id for p in shared] and shared[0].topic.records == 1_000_000
    assert [(p.workload, p.members, p.concurrency) for p in shared[1:]] == [("sleep5ms", n, 100) for n in (1, 2, 4)]


def _outcome(first: float, last: float, counted: int, cpu_s: float, rss: float) -> Outcome:
    result = {"handled": counted + 1, "counted": counted, "seconds": last - first,
              "records_per_s": counted / (last - first), "first_ts": first, "last_ts": last}
    return Outcome(result, rss, cpu_s, 0)


def test_a_group_counts_every_instance_over_the_span_from_the_first_record_to_the_last() -> None:
    m = ScaleMeasure("instances-2", 16, 1000, 64, 1_000_000, "sleep5ms", 2, 100)
    fill_measure(m, [_outcome(100.0, 106.0, 60_000, 1.2, 90.0), _outcome(100.5, 108.0, 60_000, 1.5, 80.0)])
    assert m.counted == 120_000 and m.seconds == 8.0 and m.records_per_s == 15_000.0
    assert m.member_rates == [10_000.0, 8_000.0]
    assert m.cpu_us_per_record == 22.5 and m.peak_rss_mb == 90.0
    assert m.ideal_per_s == 40_000
    failed = ScaleMeasure("instances-2", 16, 1000, 64, 1_000_000, "sleep5ms", 2, 100)
    fill_measure(failed, [_outcome(0.0, 1.0, 10, 0.1, 50.0), Outcome({"error": "no record handled"}, None, None, 1)])
    assert failed.error == "no record handled" and failed.counted == 0


def test_an_idle_instance_adds_a_zero_rate_and_its_cpu_but_no_span() -> None:
    m = ScaleMeasure("async-unordered-4", 2, 1000, 64, 300_000, "sleep5ms", 4, 100)
    idle = {"handled": 0, "counted": 0, "seconds": 0.0, "records_per_s": 0.0, "first_ts": 0.0, "last_ts": 0.0,
            "cpu_self_s": None}
    outcomes = [_outcome(100.0, 106.0, 60_000, 1.2, 90.0), Outcome(dict(idle), 70.0, 0.1, 0),
                _outcome(100.5, 108.0, 60_000, 1.5, 80.0), Outcome(dict(idle), 70.0, 0.2, 0)]
    assert counted_span(outcomes) == (100.0, 108.0)
    fill_measure(m, outcomes)
    assert m.counted == 120_000 and m.seconds == 8.0 and m.records_per_s == 15_000.0
    assert m.member_rates == [10_000.0, 0.0, 8_000.0, 0.0]
    assert m.cpu_us_per_record == 25.0  # (1.2 + 0.1 + 1.5 + 0.2) s over 120,000 records
    assert counted_span([Outcome(dict(idle), None, None, 0)]) is None


def sample_report() -> ScaleReport:
    plan = ScalePlan(partitions=(8, 64), keys=(10_000,), value_bytes=(64, 65_536), instances=(1, 2))
    report = ScaleReport({"cpus": 2}, plan.summary(), plan.curves(), duration_s=321.0)
    rates = {"p8-k10000-v64": 90_000.0, "p64-k10000-v64": 80_000.0, "p8-k10000-v65536": 7_000.0}
    for point in plan.points():
        t = point.topic
        m = ScaleMeasure(point.id, t.partitions, t.keys, t.value_bytes, t.records, point.workload, point.members,
                         point.concurrency, counted=t.records - 1, records_per_s=rates.get(point.id, 50_000.0),
                         cpu_us_per_record=11.0, peak_rss_mb=120.0, load_1m=3.5)
        if point.id == "instances-2":
            m.member_rates, m.settle_s = [20_000.0, 19_000.0], 2.5
        if point.id == "instances-1":
            m.error = "group bench-x did not settle within 60 s: Stable, 1 members, 8 partitions assigned"
        if point.id == "backlog":
            m.rss_series, m.window = [[0.0, 20.0], [1.0, 90.0], [9.0, 130.0], [10.0, 60.0]], [1.0, 9.5]
        report.measures.append(m)
    report.notes.append("Topics left on the broker: bench-x: timed out")
    return report


def test_the_table_shows_each_curve_through_the_base_point_the_aggregate_and_the_errors() -> None:
    text = markdown(sample_report())
    assert "Total time 321 s" in text
    assert "| partitions | 8 (base) | 199,999 | 90,000 | 11.0 | 120 | 3.5 |" in text
    assert "| distinct keys | 10,000 (base) | 199,999 | 90,000 |" in text
    assert "| value size | 64 B (base) |" in text and "| value size | 64 KiB | 4,095 | 7,000 |" in text
    assert "| instances of one group | 2 (ideal 40,000/s), settled after 2.5 s | 999,999 | 50,000 (20,000 + 19,000) |" \
        in text
    assert "| instances of one group | 1 (ideal 20,000/s) | 1,000,000 | group bench-x did not settle" in text
    assert "| backlog | 1,000,000 records |" in text
    assert "- Topics left on the broker: bench-x: timed out" in text


def test_rebuild_writes_the_table_and_one_plot_per_curve_from_the_json(tmp_path: Path) -> None:
    report = sample_report()
    assert ScaleReport.from_json(report.to_json()) == report
    results = tmp_path / "in.json"
    results.write_text(report.to_json())
    out = tmp_path / "out"
    result = CliRunner().invoke(bench, ["--suite", "scale", "--rebuild", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| partitions | 64 |" in result.output
    assert (out / "scale-latest.md").read_text() == markdown(report)
    assert ScaleReport.from_json((out / "scale-latest.json").read_text()) == report
    assert sorted(p.name for p in out.glob("*.png")) == ["scale-backlog.png", "scale-instances.png", "scale-keys.png",
                                                         "scale-partitions.png", "scale-value-size.png"]


def test_cli_refuses_a_file_that_is_not_a_scale_result_and_other_suites_options(tmp_path: Path) -> None:
    other = tmp_path / "bench-latest.json"
    other.write_text('{"machine": {}}')
    runner = CliRunner(env={"PYRALLEL_BOOTSTRAP_SERVERS": ""})
    result = runner.invoke(bench, ["--suite", "scale", "--rebuild", str(other), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "not a scale results file" in result.output
    result = runner.invoke(bench, ["--suite", "scale", "--kafka", "a=b"])
    assert result.exit_code == 2 and "do not apply to --suite scale" in result.output
    result = runner.invoke(bench, ["--suite", "scale"])
    assert result.exit_code == 2 and "--bootstrap-servers" in result.output
