"""pyrallel bench results without a broker: parsing contender output, latency and duplicate counts, ratios against
the targets, the markdown tables, unavailable peers, and the README section."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.results import (
    BenchReport,
    ContenderInfo,
    Guarantees,
    Latency,
    Restart,
    ResultError,
    Throughput,
    apply_result,
    compute_targets,
    latency_stats,
    markdown,
    parse_log,
    parse_result_line,
    percentile,
    report_from_json,
    restart_stats,
)
from pyrallel_tools.benchmark.runner import README_END, README_START, update_readme

pytestmark = pytest.mark.unit

G = Guarantees("yes", "yes", "yes")


def info(contender_id: str, family: str = "pyrallel", ordering: str = "", group: str = "", available: bool = True,
         reason: str = "") -> ContenderInfo:
    return ContenderInfo(contender_id, f"name of {contender_id}", family, G, ordering, group or contender_id,
                         available, reason, "1.2.3")


def cell(contender: str, workload: str, keys: int, rate: float, error: str = "") -> Throughput:
    return Throughput(contender, workload, keys, 1000, handled=1000, counted=999, seconds=1.0, records_per_s=rate,
                      peak_rss_mb=50.0, cpu_s_per_1k=0.01, error=error)


def sample_report() -> BenchReport:
    report = BenchReport({"cpus": 2}, {"keys": [100, 1000], "partitions": 8, "cpu_keys": 1000,
                                       "records": {"noop": 1000, "sleep5ms": 1000, "cpu2ms": 100}})
    report.contenders = [info("bare", "reference"), info("baseline", "reference"), info("async-key", ordering="key"),
                         info("async-unordered", ordering="unordered"), info("process-key", ordering="key"),
                         info("aio-gather", "peer", group="AIOConsumer"),
                         info("pyrallel-1.0.0-async-key", "peer", "key", "pyrallel-consumer 1.0.0"),
                         info("java-pc-key", "peer", "key", "Java PC", available=False,
                              reason="mvn failed: no network")]
    report.throughput = [
        cell("bare", "noop", 100, 1_000_000), cell("async-key", "noop", 100, 100_000),
        cell("baseline", "sleep5ms", 100, 200), cell("async-key", "sleep5ms", 100, 19_000),
        cell("async-unordered", "sleep5ms", 100, 80_000),
        cell("baseline", "sleep5ms", 1000, 200), cell("async-key", "sleep5ms", 1000, 50_000),
        cell("aio-gather", "sleep5ms", 100, 70_000), cell("aio-gather", "sleep5ms", 1000, 40_000),
        cell("pyrallel-1.0.0-async-key", "sleep5ms", 100, 2_000),
        cell("async-key", "cpu2ms", 1000, 500), cell("process-key", "cpu2ms", 1000, 1000),
        cell("pyrallel-1.0.0-async-key", "noop", 100, 0, error="boom"),
    ]
    return report


def test_parse_result_line_takes_the_marked_line() -> None:
    out = "noise\nPYRALLEL_BENCH_RESULT {\"contender\": \"x\", \"handled\": 3}\nPYRALLEL_BENCH_RESULT {}\n"
    assert parse_result_line(out) == {"contender": "x", "handled": 3}


@pytest.mark.parametrize(("out", "message"), [
    ("no result here\n", "printed no result line"),
    ("PYRALLEL_BENCH_RESULT {not json\n", "not JSON"),
    ("PYRALLEL_BENCH_RESULT [1, 2]\n", "not a JSON object"),
])
def test_parse_result_line_errors_say_what_is_wrong(out: str, message: str) -> None:
    with pytest.raises(ResultError, match=message):
        parse_result_line(out)


def test_apply_result_copies_numbers_or_the_error() -> None:
    m = Throughput("a", "noop", 100, 10)
    apply_result(m, {"handled": 10, "counted": 9, "seconds": 0.5, "records_per_s": 18.0})
    assert (m.handled, m.counted, m.seconds, m.records_per_s, m.error) == (10, 9, 0.5, 18.0, "")
    failed = Throughput("a", "noop", 100, 10)
    apply_result(failed, {"contender": "a", "error": "no record handled within 60 s"})
    assert failed.error == "no record handled within 60 s"
    incomplete = Throughput("a", "noop", 100, 10)
    apply_result(incomplete, {"handled": 10})
    assert incomplete.error.startswith("incomplete result")


def test_log_lines_round_trip_and_a_torn_last_line_is_ignored() -> None:
    data = harness.log_line(7, 1_000_000, 1_005_000) + harness.log_line(8, 0, 2_000_000) + b"0000"
    assert len(harness.log_line(1, 2, 3)) == harness.LOG_LINE_BYTES
    assert parse_log(data) == [(7, 1_000_000, 1_005_000), (8, 0, 2_000_000)]
    with pytest.raises(ResultError, match="malformed"):
        parse_log(b"x" * harness.LOG_LINE_BYTES)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ResultError):
        percentile([], 50)


def test_latency_leaves_out_warm_up_records_and_the_first_half_second() -> None:
    t0 = 1_700_000_000_000_000
    rows = [(10_000, 0, t0)]  # a warm-up record: no produce time
    rows += [(i, t0 + i * 1000, t0 + i * 1000 + 400_000) for i in range(500)]  # the first 0.5 s: 400 ms each
    rows += [(i, t0 + i * 1000, t0 + i * 1000 + (i - 499) * 1000) for i in range(500, 600)]  # 1..100 ms
    m = Latency("async-key", 1000, 600)
    latency_stats(m, rows)
    assert m.samples == 100
    assert (m.p50_ms, m.p99_ms, m.max_ms) == (50.0, 99.0, 100.0)
    assert m.cdf[0] == (1.0, 0.01) and m.cdf[-1] == (100.0, 1.0)
    assert not m.error


def test_latency_without_produce_times_is_an_error() -> None:
    m = Latency("x", 1000, 10)
    latency_stats(m, [(1, 0, 5)])
    assert m.error == "no record with a produce time was handled" and m.p50_ms is None


def test_restart_counts_duplicates_and_missing() -> None:
    first = [(i, 0, 0) for i in range(60)]
    second = [(i, 0, 0) for i in range(50, 98)] + [(97, 0, 0)]
    m = Restart("async-key", "sleep5ms", 1000, 100)
    restart_stats(m, first, second, finished=True)
    assert (m.handled_before_kill, m.handled_after_restart, m.duplicates, m.missing) == (60, 49, 11, 2)
    unfinished = Restart("baseline", "sleep5ms", 1000, 100)
    restart_stats(unfinished, first, [], finished=False)
    assert unfinished.missing is None and unfinished.duplicates == 0


def test_targets_are_ratios_of_this_run() -> None:
    targets = {t.name: t for t in compute_targets(sample_report())}
    io100 = next(t for name, t in targets.items() if name.startswith("I/O 5 ms, 100 keys"))
    assert io100.measured == pytest.approx(0.95) and io100.met is True  # 19,000 / (100 x 200)
    io1000 = next(t for name, t in targets.items() if name.startswith("I/O 5 ms, 1,000 keys"))
    assert io1000.measured == pytest.approx(250.0) and io1000.met is False
    noop = next(t for name, t in targets.items() if name.startswith("no-op, 100 keys"))
    assert noop.measured == pytest.approx(0.1) and noop.met is False
    assert all(not name.startswith("no-op, 1,000") for name in targets)  # no bare loop measured there
    cpu = next(t for name, t in targets.items() if name.startswith("CPU 2 ms"))
    assert cpu.measured == pytest.approx(2.0) and cpu.met is True


def test_targets_of_workloads_not_run_are_left_out() -> None:
    report = sample_report()
    report.config["records"] = {"cpu2ms": 100}
    report.throughput = [m for m in report.throughput if m.workload == "cpu2ms"]
    assert [t.name for t in compute_targets(report)] == ["CPU 2 ms: process engine (2 workers) vs async engine"]


def test_peers_are_compared_per_group_on_their_lowest_ratio() -> None:
    targets = [t for t in compute_targets(sample_report()) if t.name.startswith("ahead of")]
    by_note = {(t.name, t.note.split(";")[0]): t for t in targets}
    same = by_note[("ahead of pyrallel-consumer 1.0.0 on every workload", "same ordering")]
    assert same.measured == pytest.approx(9.5) and same.met  # 19,000 / 2,000; its failed run is left out
    key = by_note[("ahead of AIOConsumer on every workload", "this library in key order")]
    assert key.measured == pytest.approx(19_000 / 70_000, abs=1e-3) and key.met is False
    assert key.note == "this library in key order; lowest ratio over 2 runs; behind on: sleep5ms 100 keys (0.27x)"
    unordered = by_note[("ahead of AIOConsumer on every workload", "both unordered")]
    assert unordered.measured == pytest.approx(80_000 / 70_000, abs=1e-3) and unordered.met
    assert "over 1 runs" in unordered.note  # unordered only measured at 100 keys
    assert not any("Java" in t.name for t in targets)  # unavailable: no measurement, no target


def test_a_missing_measurement_is_not_measured_rather_than_missed() -> None:
    report = sample_report()
    report.throughput = [m for m in report.throughput if m.contender != "process-key"]
    cpu = next(t for t in compute_targets(report) if t.name.startswith("CPU 2 ms"))
    assert cpu.measured is None and cpu.met is None


def test_markdown_has_every_table_and_reports_the_unavailable_peer_with_its_reason() -> None:
    report = sample_report()
    report.latency = [Latency("async-key", 1000, 6000, "sleep5ms", 100, samples=5500, p50_ms=7.5, p99_ms=12.25,
                              max_ms=20.0, cdf=[(7.5, 0.5)]),
                      Latency("baseline", 1000, 6000, "sleep5ms", 100, error="not run: too slow")]
    report.restart = [Restart("async-key", "sleep5ms", 1000, 6200, 1000, handled_before_kill=3000,
                              handled_after_restart=3500, duplicates=300, missing=0),
                      Restart("baseline", "sleep5ms", 1000, 6200, 1000, handled_before_kill=600,
                              handled_after_restart=1200, duplicates=20, missing=None)]
    report.targets = compute_targets(report)
    text = markdown(report)
    assert "### No-op handler" in text and "### CPU-bound" in text and "### I/O-bound" in text
    assert "| name of async-key | 19,000 (95.0x) | 50,000 (250.0x) | 50 | 0.010 |" in text
    assert "100 keys: rec/s (x bare loop)" in text and "| name of async-key | 100,000 (0.10x) |" in text
    assert "| name of pyrallel-1.0.0-async-key | failed: boom |" in text
    assert "| sleep5ms, 100 keys | name of async-key | 1,000 | 5,500 | 7.5 | 12.2 | 20.0 |" in text
    assert "| sleep5ms, 100 keys | name of baseline | 1,000 | - | not run: too slow | | |" in text
    assert "| 6,200 (1,000/s) | 3,000 | 3,500 | 300 | 0 |" in text and "not finished in time" in text
    assert "### Peers that could not run\n\n- **name of java-pc-key**: mvn failed: no network" in text
    assert "| name of java-pc-key | unavailable: mvn failed: no network |" in text
    assert "| **no** |" in text and "| yes |" in text


def test_report_json_round_trip() -> None:
    report = sample_report()
    report.latency = [Latency("async-key", 1000, 6000, "cpu2ms", 1000, samples=5500, p50_ms=7.5, p99_ms=12.25,
                              max_ms=20.0, cdf=[(7.5, 0.5), (20.0, 1.0)])]
    report.restart = [Restart("async-key", "sleep5ms", 1000, 6200, 1000, handled_before_kill=3000,
                              handled_after_restart=3500, duplicates=300, missing=0)]
    report.targets = compute_targets(report)
    again = report_from_json(report.to_json())
    assert again == report


def test_a_file_that_is_not_a_results_file_is_refused() -> None:
    with pytest.raises(ResultError, match="not a pyrallel bench results file"):
        report_from_json('{"machine": {}}')


def test_update_readme_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\noutro\n")
    figure = tmp_path / "results" / "bench-throughput.png"
    update_readme(readme, "| table |\n", [figure])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| table |" in text and "![bench-throughput](results/bench-throughput.png)" in text
    update_readme(readme, "| second |\n", [])
    assert "| table |" not in readme.read_text() and readme.read_text().count(README_START) == 1


def test_update_readme_without_markers_leaves_the_file_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    update_readme(readme, "| table |\n", [])
    assert readme.read_text() == "no markers\n"


def test_the_eos_suite_reports_exactly_once_against_at_least_once_as_the_mean_of_each_contenders_runs() -> None:
    report = BenchReport({"cpus": 2}, {"keys": [1000], "records": {"sleep5ms": 1000}})
    report.contenders = [info("async-key", ordering="key"), info("async-key-eos", ordering="key")]
    report.throughput = [cell("async-key", "sleep5ms", 1000, 50_000), cell("async-key-eos", "sleep5ms", 1000, 40_000),
                         cell("async-key", "sleep5ms", 1000, 30_000), cell("async-key-eos", "sleep5ms", 1000, 36_000)]
    (eos,) = [t for t in compute_targets(report) if "exactly-once" in t.name]
    assert eos.measured == 0.95 and eos.goal == 0.8 and eos.met
