"""pyrallel bench --suite rebalance against the real broker, once: both contenders, both events, figures there.

A smoke test of the plumbing (member processes, their logs, the settle detection); it judges no figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrallel_tools.benchmark.rebalance import RebalancePlan, run_rebalance
from pyrallel_tools.benchmark.rebalance_report import CONTENDERS, EVENTS

pytestmark = pytest.mark.integration


def test_one_repetition_measures_join_and_leave_for_both_contenders(kafka_bootstrap: str, tmp_path: Path) -> None:
    # A 500 ms heartbeat keeps each event around a second (librdkafka's 3 s default would triple the test).
    plan = RebalancePlan(repetitions=1, kafka=(("heartbeat.interval.ms", "500"),))
    report = run_rebalance(kafka_bootstrap, plan, tmp_path / "out", tmp_path / "run")
    assert report.errors == {}
    assert {(m.contender, m.event) for m in report.measures} == {(c, e) for c in CONTENDERS for e in EVENTS}
    for m in report.measures:
        assert not m.error
        assert m.max_unowned_s is not None and m.max_unowned_s >= 0
        assert m.settle_s is not None and m.settle_s >= 0
    assert report.config["kafka"] == {"heartbeat.interval.ms": "500"}
    assert (tmp_path / "out" / "rebalance-latest.json").is_file()
