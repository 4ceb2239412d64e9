"""``pyrallel bench --suite share`` without a broker: its plan, the table and the JSON. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrallel_tools.benchmark.peers import catalog
from pyrallel_tools.benchmark.results import Restart, restart_stats
from pyrallel_tools.benchmark.scale_report import ScaleMeasure
from pyrallel_tools.benchmark.share import CONSUMER_GROUP, SHARE, SharePlan, kill_stats, longest_wait_s
from pyrallel_tools.benchmark.share_report import ShareReport, markdown, point_id, write_share_outputs

pytestmark = pytest.mark.unit


def _measure(contender: str, members: int, rate: float, members_rates: list[float]) -> ScaleMeasure:
    return ScaleMeasure(point_id(contender, members), 2, 1000, 64, 300_000, "sleep5ms", members, 100,
                        counted=int(rate * 5), seconds=5.0, records_per_s=rate, member_rates=members_rates,
                        cpu_us_per_record=100.0 if contender == SHARE else 50.0, load_1m=3.0)


def _report() -> ShareReport:
    plan = SharePlan()
    report = ShareReport({}, plan.summary())
    report.throughput = [_measure(SHARE, 1, 4000, []), _measure(CONSUMER_GROUP, 1, 8000, []),
                         _measure(SHARE, 2, 6000, [3000, 3000])]
    report.throughput.append(ScaleMeasure(point_id(CONSUMER_GROUP, 2), 2, 1000, 64, 300_000, "sleep5ms", 2, 100,
                                          error="group did not settle"))
    report.throughput.append(_measure(CONSUMER_GROUP, 4, 9000, [4000, 0, 5000, 0]))
    report.throughput[-1].idle_members = 2
    kill = Restart(SHARE, "sleep5ms", 1000, 10)
    restart_stats(kill, [(i, 0, 0) for i in range(6)], [(i, 0, 0) for i in range(4, 10)], True)
    report.kills = [kill, Restart(CONSUMER_GROUP, "sleep5ms", 1000, 10, error="2 records were not handled in time")]
    report.kill_longest_wait_s = [7.46, None]
    return report


def test_the_plan_compares_the_share_contender_with_the_unordered_consumer_group_on_two_partitions() -> None:
    plan = SharePlan()
    specs = {s.id: s for s in catalog()}
    assert plan.contenders == (SHARE, CONSUMER_GROUP)
    assert specs[SHARE].args[-1] == "share" and specs[SHARE].ordering == specs[CONSUMER_GROUP].ordering == "unordered"
    assert plan.partitions == 2 and plan.instances == (1, 2, 4)
    timing = plan.timing()
    assert (timing.window_s, timing.group_concurrency) == (plan.window_s, plan.concurrency)
    assert json.loads(json.dumps(plan.summary()))["instances"] == [1, 2, 4]


def test_the_table_gives_each_instance_count_both_rates_their_ratio_and_the_duplicates() -> None:
    text = markdown(_report())
    assert "| 1 | 4,000 | 8,000 | 0.50 | 100 / 50 | 3.0 / 3.0 |" in text
    assert "| 2 | 6,000 (3,000 + 3,000) | group did not settle | - | 100 / - | 3.0 / - |" in text
    assert "| 4 | not run | 9,000 (4,000 + 0 + 5,000 + 0), 2 idle | - | - / 50 | - / 3.0 |" in text
    assert "| share | 10 | 6 | 6 | 2 | 0 | 7.5 |" in text  # records 4 and 5 handled twice, none missing
    assert "| async-unordered | 10 | 2 records were not handled in time | | | | |" in text


def test_the_kill_counts_the_produced_records_only_not_the_warm_up_ones() -> None:
    kill = Restart(SHARE, "sleep5ms", 1000, 10, rate=4000)
    warm_up = [(10, 0, 0), (11, 0, 0)]  # sequence numbers from the record count on, handled by both
    kill_stats(kill, [*warm_up, *[(i, 1, 1) for i in range(4)]], [*warm_up, *[(i, 1, 1) for i in range(3, 10)]],
               True)
    assert (kill.handled_before_kill, kill.handled_after_restart, kill.duplicates, kill.missing) == (4, 7, 1, 0)
    unfinished = Restart(SHARE, "sleep5ms", 1000, 10, rate=4000)
    kill_stats(unfinished, [(i, 1, 1) for i in range(4)], [], False)
    assert unfinished.missing is None


def test_the_longest_wait_is_from_a_record_s_production_to_its_first_handling() -> None:
    rows = [(0, 1_000_000, 1_500_000), (1, 1_000_000, 9_000_000), (1, 1_000_000, 3_000_000), (20, 0, 99_000_000)]
    assert longest_wait_s(rows, 10) == 2.0  # record 1 first handled after 2 s; the warm-up record 20 left out
    assert longest_wait_s([], 10) is None


def test_the_result_files_are_written(tmp_path: Path) -> None:
    write_share_outputs(_report(), tmp_path)
    data = json.loads((tmp_path / "share-latest.json").read_text())
    assert data["kills"][0]["duplicates"] == 2
    assert (tmp_path / "share-latest.md").read_text() == markdown(_report())
