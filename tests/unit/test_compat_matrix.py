"""The compatibility matrix's pure parts: reading pytest's JUnit XML, judging a version, writing the document."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pyrallel_tools.compat_matrix import (
    Attempt,
    JunitSummary,
    MatrixReport,
    TestOutcome,
    VersionResult,
    _parse_args,
    main,
    parse_junit,
    render_doc,
)

pytestmark = pytest.mark.unit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests">
  <testsuite name="pytest" errors="1" failures="2" skipped="1" tests="6" time="12.5">
    <testcase classname="tests.integration.test_x" name="test_ok[async]" time="1.0"/>
    <testcase classname="tests.integration.test_x" name="test_bad" time="2.0">
      <failure message="AssertionError: lost 3 records&#10;assert 3 == 0">traceback</failure>
    </testcase>
    <testcase classname="tests.integration.test_x" name="test_setup" time="0.1">
      <error message="failed on setup with &quot;KafkaException: Not coordinator&quot;">traceback</error>
    </testcase>
    <testcase classname="tests.integration.test_x" name="test_skip" time="0.0">
      <skipped type="pytest.skip" message="needs go">skip</skipped>
    </testcase>
    <testcase classname="tests.integration.test_x.TestGroup" name="test_in_class" time="0.5">
      <failure message="boom">traceback</failure>
      <error message="teardown failed">traceback</error>
    </testcase>
    <testcase classname="tests.integration.test_x" name="test_ok2" time="0.5"/>
  </testsuite>
</testsuites>
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tests" / "integration").mkdir(parents=True)
    (tmp_path / "tests" / "integration" / "test_x.py").write_text("")
    return tmp_path


def test_junit_counts_each_testcase_once_and_rebuilds_node_ids(root: Path) -> None:
    summary = parse_junit(JUNIT, root)

    assert (summary.tests, summary.passed, summary.failed, summary.errors, summary.skipped) == (6, 2, 2, 1, 1)
    assert summary.seconds == pytest.approx(12.5)
    by_id = {o.node_id: o for o in summary.outcomes}
    assert by_id["tests/integration/test_x.py::test_ok[async]"].status == "passed"
    assert by_id["tests/integration/test_x.py::test_bad"].message == "AssertionError: lost 3 records"
    assert by_id["tests/integration/test_x.py::TestGroup::test_in_class"].status == "failed"
    assert [o.node_id for o in summary.bad] == [
        "tests/integration/test_x.py::test_bad",
        "tests/integration/test_x.py::test_setup",
        "tests/integration/test_x.py::TestGroup::test_in_class",
    ]


def test_junit_of_a_bare_testsuite_and_of_a_collection_error(root: Path) -> None:
    xml = """<testsuite tests="1" time="0.3"><testcase classname="" name="tests.integration.test_gone">
      <error message="collection failure">ImportError</error></testcase></testsuite>"""

    summary = parse_junit(xml, root)

    assert summary.errors == 1
    assert summary.bad[0].node_id == "tests.integration.test_gone"
    assert summary.seconds == pytest.approx(0.3)


def _summary(**counts: int) -> JunitSummary:
    outcomes = [TestOutcome(f"tests/integration/test_x.py::test_{status}_{i}", status, f"{status} why")
                for status, n in counts.items() for i in range(n)]
    return JunitSummary(tuple(outcomes), 1.0)


def test_verdict_tells_a_flake_from_a_failure() -> None:
    clean = Attempt(_summary(passed=3), 10.0, 0)
    failing = Attempt(_summary(passed=2, failed=1), 10.0, 1)

    assert VersionResult("4.4.0", clean).verdict == "passed"
    assert VersionResult("4.4.0", failing, Attempt(_summary(passed=1), 3.0, 0)).verdict == "flaky"
    assert VersionResult("4.4.0", failing, Attempt(_summary(failed=1), 3.0, 1)).verdict == "failed"
    assert VersionResult("4.4.0", failing).verdict == "failed"
    assert VersionResult("4.4.0", Attempt(None, 0.0, None, "broker did not start")).verdict == "failed"
    assert VersionResult("4.4.0", Attempt(_summary(), 1.0, 5)).verdict == "failed"  # nothing collected


def _report(results: list[VersionResult]) -> MatrixReport:
    return MatrixReport(results=results, started=datetime(2026, 12, 6, 12, 0, tzinfo=UTC), total_s=1234.0,
                        machine="2 cores", client="confluent-kafka 2.16.2, librdkafka 2.16.0",
                        python="CPython 3.11.7", java="openjdk 17", command="python -m pyrallel_tools.compat_matrix")


def test_document_has_one_row_per_version_with_its_connect_worker_release() -> None:
    doc = render_doc(_report([
        VersionResult("4.1.2", Attempt(_summary(passed=40, skipped=1), 301.4, 0)),
        VersionResult("4.4.0", Attempt(_summary(passed=41), 280.0, 0)),
    ]))

    assert "| 4.1.2 | 4.1.2 | 41 | 40 | 0 | 1 | 0 | 301 | - | pass |" in doc
    assert "| 4.4.0 | 4.3.1 | 41 | 41 | 0 | 0 | 0 | 280 | - | pass |" in doc
    assert "2026-12-06 12:00 UTC, whole matrix 1234 s" in doc
    assert "librdkafka 2.16.0" in doc
    assert "Every test passed on every version" in doc
    assert "`tests/integration/test_lifecycle.py`" in doc
    assert "make test-matrix" in doc


def test_document_names_every_failure_and_what_its_rerun_did() -> None:
    failing = Attempt(_summary(passed=39, failed=1, error=1), 300.0, 1)
    doc = render_doc(_report([
        VersionResult("4.2.2", failing, Attempt(_summary(passed=2), 20.0, 0)),
        VersionResult("4.3.2", failing, Attempt(_summary(passed=1, failed=1), 20.0, 1)),
        VersionResult("4.1.2", Attempt(None, 0.0, None, "Broker 1 exited | during start")),
    ]))

    assert "| 4.2.2 | 4.2.0 | 41 | 39 | 1 | 0 | 1 | 300 | 2 of 2 passed | pass on re-run (flaky) |" in doc
    assert "| 4.3.2 | 4.3.1 | 41 | 39 | 1 | 0 | 1 | 300 | 1 of 2 passed | **FAIL** |" in doc
    assert "| 4.1.2 | 4.1.2 | - | - | - | - | - | 0 | - | **FAIL** |" in doc
    assert "- failed: `tests/integration/test_x.py::test_failed_0`: failed why" in doc
    assert "- error: `tests/integration/test_x.py::test_error_0`: error why" in doc
    assert "- passed: `tests/integration/test_x.py::test_passed_0`" in doc
    assert "- no result: Broker 1 exited | during start" in doc
    assert "Every test passed" not in doc


def test_arguments_after_a_double_dash_go_to_pytest() -> None:
    args, extra = _parse_args(["--versions", "4.2.2", "4.4.0", "--doc", "/tmp/m.md", "--", "-k", "rebalance"])

    assert args.versions == ["4.2.2", "4.4.0"]
    assert args.doc == Path("/tmp/m.md")
    assert extra == ["-k", "rebalance"]


def test_a_version_that_is_no_4x_release_is_refused_before_anything_starts() -> None:
    assert main(["--versions", "3.9.0"]) == 2
