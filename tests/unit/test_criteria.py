"""The scenario criteria: how long an active instance sat without a partition, and the verdict it leads to."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pyrallel_tools.bluegreen.criteria import BALANCE_SETTLING_S, judge, longest_idle_active
from pyrallel_tools.bluegreen.run_record import Sample
from pyrallel_tools.bluegreen.run_spec import RunOptions, RunSpec
from pyrallel_tools.bluegreen.validation.judge import validate
from pyrallel_tools.bluegreen.validation.load import ConsumedRecord, ProducedRecord

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def rounds(instance: str, assigned: Sequence[int | None], color: str = "blue", state: str = "ACTIVE",
           step: float = 0.5) -> list[Sample]:
    """One sample of ``instance`` per round (``step`` apart from T0), owning ``assigned[i]`` partitions."""
    return [Sample(T0 + i * step, color, instance, state, 0, 10, 0, n) for i, n in enumerate(assigned)]


def idle(samples: Sequence[Sample], partitions: int) -> tuple[float, str | None]:
    """``longest_idle_active`` with the seconds rounded to the microsecond (sample times are sums of floats)."""
    seconds, who = longest_idle_active(samples, partitions)
    return round(seconds, 6), who


def test_no_samples_or_no_idle_instance_is_zero_and_no_one() -> None:
    assert idle([], 8) == (0.0, None)
    assert idle(rounds("blue-1", [4, 4, 4]) + rounds("blue-2", [4, 4, 4]), 8) == (0.0, None)
    # One idle sample is no stretch yet.
    assert idle(rounds("blue-1", [8, 8]) + rounds("blue-2", [4, 0]), 8) == (0.0, None)


def test_the_longest_stretch_is_measured_from_the_first_idle_sample_to_the_last_and_named() -> None:
    # blue-2 owns nothing from 0.0 s to 3.0 s, then gets partitions; blue-3 only from 0.0 s to 1.0 s.
    samples = (rounds("blue-1", [8] * 8) + rounds("blue-2", [0] * 7 + [3])
               + rounds("blue-3", [0, 0, 0, 3, 3, 3, 3, 3]))
    assert idle(samples, 8) == (3.0, "blue-2")


def test_a_sample_owning_a_partition_ends_the_stretch() -> None:
    # Idle 0.0-1.0 s, owning at 1.5 s, idle again 2.0-2.5 s: two stretches of 1.0 s and 0.5 s, not one of 2.5 s.
    samples = rounds("blue-1", [8] * 6) + rounds("blue-2", [0, 0, 0, 2, 0, 0])
    assert idle(samples, 8) == (1.0, "blue-2")


def test_samples_out_of_time_order_are_taken_in_time_order() -> None:
    samples = rounds("blue-1", [8] * 5) + rounds("blue-2", [0] * 5)
    assert idle(list(reversed(samples)), 8) == (2.0, "blue-2")


@pytest.mark.parametrize(("state", "assigned"), [("PAUSED", 0), ("DRAINING", 0), ("DOWN", None), ("ACTIVE", None)])
def test_only_an_active_instance_that_answered_with_no_partition_is_idle(state: str, assigned: int | None) -> None:
    samples = rounds("blue-1", [8] * 5) + rounds("blue-2", [assigned] * 5, state=state)
    assert idle(samples, 8) == (0.0, None)


def test_more_active_instances_than_partitions_leave_one_idle_by_right() -> None:
    three = rounds("blue-1", [1] * 5) + rounds("blue-2", [1] * 5) + rounds("blue-3", [0] * 5)
    assert idle(three, 2) == (0.0, None)
    assert idle(three, 3) == (2.0, "blue-3")


def test_active_instances_are_counted_per_color() -> None:
    # Two partitions, two active blue instances and one active green one in the same rounds: blue-2 owning nothing
    # is idle (blue has no more active instances than partitions), green's do not count against blue.
    samples = (rounds("blue-1", [2] * 5) + rounds("blue-2", [0] * 5)
               + rounds("green-1", [2] * 5, color="green"))
    assert idle(samples, 2) == (2.0, "blue-2")


def _balance(samples: list[Sample]) -> tuple[str, bool]:
    spec = RunSpec.checked("C", 1, None, RunOptions(bootstrap="127.0.0.1:1", partitions=8))
    validation = validate([ProducedRecord(0, "k", 0, 0, 0, T0)], [ConsumedRecord(0, "k", 0, 0, 0, "blue", "b", T0)])
    criteria, _ = judge(spec, [], samples, validation, None, "blue")
    (balance,) = [c for c in criteria if c.name == "longest an active instance owned no partition"]
    return balance.measured, balance.passed


def test_the_run_fails_when_an_active_instance_owns_nothing_beyond_the_settling_time() -> None:
    steps = int(BALANCE_SETTLING_S / 0.5)
    within = rounds("blue-1", [8] * (steps + 1)) + rounds("blue-2", [0] * (steps + 1))
    beyond = rounds("blue-1", [8] * (steps + 3)) + rounds("blue-2", [0] * (steps + 3))
    assert _balance(within) == (f"{BALANCE_SETTLING_S:.1f} s (blue-2)", True)
    assert _balance(beyond) == (f"{BALANCE_SETTLING_S + 1:.1f} s (blue-2)", False)
