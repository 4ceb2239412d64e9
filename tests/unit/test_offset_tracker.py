"""The tracker never offers a commit past an unfinished record, whatever order completions come in."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrallel_consumer.control.offset_codec import OffsetMap, decode_offset_map, encode_offset_ranges
from pyrallel_consumer.control.offset_tracker import PartitionOffsets, restore_map

pytestmark = pytest.mark.unit

TP = ("orders", 0)
WINDOW = 100_000


def tracker_of(epoch: int, start: int | None, restored: OffsetMap | None = None, end: int | None = None,
               window: int = WINDOW) -> PartitionOffsets:
    return PartitionOffsets(TP, epoch, start, restored, max_window=window, end_at_assignment=end)


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
    tracker = tracker_of(1, offsets[0])
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
    tracker = tracker_of(1, offsets[0])
    for offset in offsets:
        tracker.receive(offset)
    for offset in completed:
        tracker.complete(offset)
    point = tracker.commit_point()
    # No point means nothing changed since the start position was committed.
    offset, metadata = (point.offset, point.metadata) if point else (offsets[0], "")
    assert point is not None or not completed
    end = offsets[-1] + 1
    after_restart = tracker_of(2, offset, restore_map(TP, offset, metadata, end, WINDOW), end)
    handled_again = [o for o in offsets if o >= offset and after_restart.receive(o)]
    assert handled_again == [o for o in offsets if o not in set(completed)]


def test_restored_map_carries_forward_until_its_records_arrive_again() -> None:
    first = tracker_of(1, 100)
    for offset in range(100, 110):
        first.receive(offset)
    for offset in (101, 102, 105, 109):
        first.complete(offset)
    point = first.commit_point()
    assert point is not None and point.offset == 100
    second = tracker_of(2, 100, restore_map(TP, 100, point.metadata, 110, WINDOW), 110)
    assert second.receive(100)
    second.complete(100)
    # 101 and 102 were done before: the commit moves past them without fetching them again.
    assert second.commit_offset() == 103
    carried = second.commit_point()
    assert carried is not None
    omap = decode_offset_map(carried.metadata, carried.offset)
    assert omap is not None and [o for o in range(103, 110) if omap.contains(o)] == [105, 109]


def test_unchanged_position_offers_no_new_commit() -> None:
    tracker = tracker_of(1, 0)
    tracker.receive(0)
    tracker.complete(0)
    point = tracker.commit_point()
    assert point is not None and point.offset == 1
    tracker.mark_committed(point)
    assert tracker.commit_point() is None


def test_foreign_or_broken_metadata_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert restore_map(TP, 10, "written by another client", 100, WINDOW) is None
        assert restore_map(TP, 10, "pyr1:!!!", 100, WINDOW) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "orders[0]" in warnings[0] and "not an offset map" in warnings[0]


@pytest.mark.parametrize(
    ("ranges", "window_end", "partition_end", "window", "reason"),
    [
        # The hostile probe: a 27-character map claiming 2**40 offsets done above the committed one.
        ([(11, 10 + 2**40)], 10 + 2**40, 49, WINDOW, "longer than max_pending_offsets"),
        ([(11, 10 + 2**40)], 10 + 2**40, 49, 2**41, "beyond the partition's end (high watermark 49)"),
        # A map reaching 30 offsets past the log end.
        ([(11, 76)], 76, 46, WINDOW, "beyond the partition's end (high watermark 46)"),
        ([(11, 30)], 300, 1_000, 100, "longer than max_pending_offsets (100)"),
        ([(11, 30)], 40, None, WINDOW, "could not be read"),
    ],
)
def test_a_map_that_could_skip_unhandled_records_is_not_trusted(
    caplog: pytest.LogCaptureFixture, ranges: list[tuple[int, int]], window_end: int, partition_end: int | None,
    window: int, reason: str,
) -> None:
    metadata = encode_offset_ranges(10, ranges, window_end)
    assert metadata
    with caplog.at_level(logging.WARNING):
        assert restore_map(TP, 10, metadata, partition_end, window) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "orders[0] at offset 10" in warnings[0] and reason in warnings[0]


def test_a_map_inside_the_partition_and_the_window_is_trusted() -> None:
    metadata = encode_offset_ranges(10, [(11, 46)], 46)
    assert metadata
    restored = restore_map(TP, 10, metadata, 46, 100)
    assert restored is not None and restored.completed == ((11, 46),)


def test_the_written_map_window_is_cut_at_max_pending_offsets_so_the_next_owner_trusts_it() -> None:
    tracker = tracker_of(1, 0, window=100)
    for offset in range(300):
        tracker.receive(offset)
    for offset in range(1, 300):
        tracker.complete(offset)
    point = tracker.commit_point()
    assert point is not None and point.offset == 0
    restored = restore_map(TP, 0, point.metadata, 300, 100)
    assert restored is not None and restored.length == 100
    after_restart = tracker_of(2, 0, restored, 300, window=100)
    handled_again = [o for o in range(300) if after_restart.receive(o)]
    assert handled_again == [0, *range(100, 300)], "done offsets beyond the window run again, none is lost"


def test_a_map_too_long_to_commit_is_warned_about_once_until_it_fits(caplog: pytest.LogCaptureFixture) -> None:
    def too_long_a_map(first: int, last: int) -> None:
        """Receive first..last and complete every other one above ``first``: no encoding fits 4,000 characters."""
        for offset in range(first, last + 1):
            tracker.receive(offset)
        for offset in range(first + 2, last + 1, 2):
            tracker.complete(offset)

    tracker = tracker_of(1, 0)
    with caplog.at_level(logging.WARNING):
        too_long_a_map(0, 40_000)
        for offset in (1, 3, 5):  # more commits while it stays too long (nothing new to commit: still 0, no map)
            tracker.complete(offset)
            assert tracker.commit_point() is None and tracker.map_lossy
        assert caplog.text.count("exceeds 4000 characters") == 1
        for offset in range(40_001):
            tracker.complete(offset)
        assert tracker.commit_point() is not None and not tracker.map_lossy
        too_long_a_map(40_001, 80_001)
        assert tracker.commit_point() is not None and tracker.map_lossy
    assert caplog.text.count("exceeds 4000 characters") == 2, "too long again after it fit: warned again"


def test_no_commit_goes_past_the_partition_end_known_at_assignment(caplog: pytest.LogCaptureFixture) -> None:
    # A caller that restored a map without checking it against the partition's end (50).
    tracker = tracker_of(1, 10, OffsetMap(10, 100, ((11, 110),)), end=50)
    tracker.receive(10)
    tracker.complete(10)
    with caplog.at_level(logging.ERROR):
        assert tracker.commit_point() is None
    assert "beyond the partition's end (50)" in caplog.text


def test_blocking_offset_is_the_head_and_gaps_are_counted() -> None:
    tracker = tracker_of(1, 0)
    for offset in (0, 1, 5):
        tracker.receive(offset)
    tracker.complete(1)
    blocking = tracker.blocking()
    assert blocking is not None and blocking[0] == 0
    assert tracker.gap_offsets == 3
    assert not tracker.receive(1), "an offset seen before is not handled twice"
