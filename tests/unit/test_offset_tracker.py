"""The tracker never offers a commit past an unfinished record, whatever order completions come in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrallel_consumer.control.offset_codec import decode_offset_map
from pyrallel_consumer.control.offset_tracker import PartitionOffsets, restore_map

pytestmark = pytest.mark.unit

TP = ("orders", 0)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Ascending offsets with random gaps (never-delivered offsets), and a random completion order."""
    gaps = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=200))
    offsets, offset = [], draw(st.integers(min_value=0, max_value=10**9))
    for step in gaps:
        offsets.append(offset)
        offset += step
    completed = draw(st.permutations(offsets))
    cut = draw(st.integers(min_value=0, max_value=len(completed)))
    return offsets, list(completed[:cut])


@given(deliveries())
def test_commit_offset_is_the_lowest_incomplete_or_past_the_last(case: tuple[list[int], list[int]]) -> None:
    offsets, completed = case
    tracker = PartitionOffsets(TP, 1, offsets[0])
    for offset in offsets:
        assert tracker.receive(offset)
    done: set[int] = set()
    for offset in completed:
        tracker.complete(offset)
        done.add(offset)
        position = tracker.commit_offset()
        incomplete = [o for o in offsets if o not in done]
        assert position == (min(incomplete) if incomplete else offsets[-1] + 1)
        assert tracker.incomplete_count == len(incomplete)


@given(deliveries())
def test_commit_map_round_trips_and_restores_exactly_the_done_records(case: tuple[list[int], list[int]]) -> None:
    offsets, completed = case
    tracker = PartitionOffsets(TP, 1, offsets[0])
    for offset in offsets:
        tracker.receive(offset)
    for offset in completed:
        tracker.complete(offset)
    point = tracker.commit_point()
    # No point means nothing changed since the start position was committed.
    offset, metadata = (point.offset, point.metadata) if point else (offsets[0], "")
    assert point is not None or not completed
    after_restart = PartitionOffsets(TP, 2, offset, restore_map(TP, offset, metadata))
    handled_again = [o for o in offsets if o >= offset and after_restart.receive(o)]
    assert handled_again == [o for o in offsets if o not in set(completed)]


def test_restored_map_carries_forward_until_its_records_arrive_again() -> None:
    first = PartitionOffsets(TP, 1, 100)
    for offset in range(100, 110):
        first.receive(offset)
    for offset in (101, 102, 105, 109):
        first.complete(offset)
    point = first.commit_point()
    assert point is not None and point.offset == 100
    second = PartitionOffsets(TP, 2, 100, restore_map(TP, 100, point.metadata))
    assert second.receive(100)
    second.complete(100)
    # 101 and 102 were done before: the commit moves past them without fetching them again.
    assert second.commit_offset() == 103
    carried = second.commit_point()
    assert carried is not None
    omap = decode_offset_map(carried.metadata, carried.offset)
    assert omap is not None and [o for o in range(103, 110) if omap.contains(o)] == [105, 109]


def test_unchanged_position_offers_no_new_commit() -> None:
    tracker = PartitionOffsets(TP, 1, 0)
    tracker.receive(0)
    tracker.complete(0)
    point = tracker.commit_point()
    assert point is not None and point.offset == 1
    tracker.mark_committed(point)
    assert tracker.commit_point() is None


def test_foreign_or_broken_metadata_is_ignored() -> None:
    assert restore_map(TP, 10, "written by another client") is None
    assert restore_map(TP, 10, "pyr1:!!!") is None


def test_blocking_offset_is_the_head_and_gaps_are_counted() -> None:
    tracker = PartitionOffsets(TP, 1, 0)
    for offset in (0, 1, 5):
        tracker.receive(offset)
    tracker.complete(1)
    blocking = tracker.blocking()
    assert blocking is not None and blocking[0] == 0
    assert tracker.gap_offsets == 3
    assert not tracker.receive(1), "an offset seen before is not handled twice"
