"""The completed-offset map survives the round trip through commit metadata, and never costs much."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrallel_consumer.control.offset_codec import (
    MAX_METADATA_CHARS,
    OffsetMap,
    OffsetMapError,
    decode_offset_map,
    encode_offset_map,
    encode_offset_ranges,
    is_offset_map,
)

pytestmark = pytest.mark.unit

PREFIX = "pyr1:"


# ---------------------------------------------------------------------------------------------------
# Independent reference encoder (naive, from the documented format) used as an oracle.
# ---------------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def text(binary: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(binary).decode().rstrip("=")


def ref_runs(base: int, completed: list[int], window_end: int) -> list[int]:
    """Alternating run lengths, incomplete first, summing to the window length."""
    runs: list[int] = []
    cursor = base
    for start, end in ref_ranges(completed):
        runs += [start - cursor, end - start]
        cursor = end
    if window_end > cursor:
        runs.append(window_end - cursor)
    return runs


def ref_rle(base: int, completed: list[int], window_end: int) -> str:
    body = b"\x01R" + varint(base) + varint(window_end - base)
    body += b"".join(varint(run) for run in ref_runs(base, completed, window_end))
    return text(body)


def ref_bitset_size(base: int, window_end: int) -> int:
    header = 2 + len(varint(base)) + len(varint(window_end - base))
    binary = header + (window_end - base + 7) // 8
    return len(PREFIX) + (4 * binary + 2) // 3


def ref_bitset(base: int, completed: list[int], window_end: int) -> str:
    bits = bytearray((window_end - base + 7) // 8)
    for offset in completed:
        i = offset - base
        bits[i // 8] |= 1 << (i % 8)
    return text(b"\x01B" + varint(base) + varint(window_end - base) + bytes(bits))


def ref_ranges(completed: list[int]) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for offset in completed:
        if ranges and ranges[-1][1] == offset:
            ranges[-1] = (ranges[-1][0], offset + 1)
        else:
            ranges.append((offset, offset + 1))
    return tuple(ranges)


def raw(binary: bytes) -> str:
    """Metadata string for an arbitrary binary payload."""
    return text(binary)


T = TypeVar("T")


class CountingIterable(Generic[T]):
    """Yields items and counts how many were pulled, to prove early termination."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = items
        self.consumed = 0

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            self.consumed += 1
            yield item


# ---------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, list[int], int]:
    """(base, completed offsets ascending, window_end) with varied shapes and densities."""
    base = draw(st.integers(min_value=0, max_value=2**50))
    shape = draw(st.sampled_from(["runs", "density", "sparse"]))
    if shape == "runs":
        lengths = draw(st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=60))
        completed: list[int] = []
        cursor = base + lengths[0]  # first run is incomplete: base is never completed
        is_completed = True
        for run in lengths[1:]:
            if is_completed:
                completed.extend(range(cursor, cursor + run))
            cursor += run
            is_completed = not is_completed
        window_end = max(cursor, base + 1) + draw(st.integers(min_value=0, max_value=100))
    else:
        length = draw(st.integers(min_value=1, max_value=50_000))
        window_end = base + length
        if shape == "density":
            density = draw(st.floats(min_value=0.0, max_value=1.0))
        else:
            density = draw(st.floats(min_value=0.0, max_value=0.01))
        rng = draw(st.randoms(use_true_random=False))
        completed = [offset for offset in range(base + 1, window_end) if rng.random() < density]
    return base, completed, window_end


# ---------------------------------------------------------------------------------------------------
# Round trip and choice of encoding
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=windows(),
    limit=st.one_of(st.just(MAX_METADATA_CHARS), st.integers(min_value=0, max_value=MAX_METADATA_CHARS)),
)
def test_round_trip_and_shortest_choice(window: tuple[int, list[int], int], limit: int) -> None:
    base, completed, window_end = window
    encoded = encode_offset_map(base, iter(completed), window_end, limit=limit)

    if not completed:
        assert encoded == ""
        return

    rle = ref_rle(base, completed, window_end)
    assert ref_bitset_size(base, window_end) == len(ref_bitset(base, completed, window_end))
    candidates = [rle] if len(rle) <= limit else []
    if ref_bitset_size(base, window_end) <= limit:
        candidates.append(ref_bitset(base, completed, window_end))

    if not candidates:
        assert encoded is None
        return
    # The shorter encoding, run-length on a tie, byte for byte.
    assert encoded == min(candidates, key=len)
    assert encoded is not None
    assert len(encoded) <= limit
    assert is_offset_map(encoded)

    decoded = decode_offset_map(encoded, base)
    assert decoded is not None
    assert decoded.base == base
    assert decoded.length == window_end - base
    assert decoded.completed == ref_ranges(completed)
    assert decoded.completed_count == len(completed)
    completed_set = set(completed)
    probes = [base, window_end - 1, window_end, *completed[:20], *(o + 1 for o in completed[:20])]
    for probe in probes:
        assert decoded.contains(probe) == (probe in completed_set)


def test_rle_example_is_exact() -> None:
    # base 10, window [10, 100), completed 12,13,14 and 17 -> runs 2,3,2,1,82 (9 bytes; bitset needs 16)
    encoded = encode_offset_map(10, [12, 13, 14, 17], 100)
    assert encoded == text(b"\x01R\x0a\x5a\x02\x03\x02\x01\x52")
    decoded = decode_offset_map(encoded, 10)
    assert decoded == OffsetMap(base=10, length=90, completed=((12, 15), (17, 18)))
    assert decoded.completed_count == 4
    assert [decoded.contains(o) for o in range(9, 21)] == [
        False, False, False, True, True, True, False, False, True, False, False, False,
    ]  # fmt: skip


def test_small_window_prefers_bitset() -> None:
    # window [10, 20): bitset is 6 bytes, RLE would be 9
    encoded = encode_offset_map(10, [12, 13, 14, 17], 20)
    assert encoded == text(b"\x01B\x0a\x0a" + bytes([0b1001_1100, 0]))
    assert decode_offset_map(encoded, 10) == OffsetMap(base=10, length=10, completed=((12, 15), (17, 18)))


def test_trailing_completed_run_has_no_final_incomplete_run() -> None:
    encoded = encode_offset_map(0, [38, 39], 40)
    assert encoded == text(b"\x01R\x00\x28\x26\x02")
    assert decode_offset_map(encoded, 0) == OffsetMap(base=0, length=40, completed=((38, 40),))


def test_bitset_chosen_when_rle_is_too_long() -> None:
    base = 1_000
    window_end = base + 16_000
    completed = list(range(base + 1, window_end, 2))
    encoded = encode_offset_map(base, completed, window_end)
    assert encoded is not None
    assert base64.urlsafe_b64decode(encoded[len(PREFIX) :] + "==")[:2] == b"\x01B"
    assert encoded == ref_bitset(base, completed, window_end)
    assert len(encoded) == ref_bitset_size(base, window_end) == 2680
    decoded = decode_offset_map(encoded, base)
    assert decoded is not None
    assert decoded.completed_count == 8_000
    assert len(decoded.completed) == 8_000
    assert decoded.completed[0] == (1_001, 1_002)
    assert decoded.completed[-1] == (16_999, 17_000)


@pytest.mark.parametrize("count", range(1, 7))
def test_limit_is_exact_on_the_final_string_length(count: int) -> None:
    # A huge window makes the bitset impossible; `count` sparse offsets vary the RLE length mod 3.
    base, window_end = 0, 2**30
    offsets = [10 * (i + 1) for i in range(count)]
    encoded = encode_offset_map(base, offsets, window_end)
    assert encoded == ref_rle(base, offsets, window_end)
    assert encode_offset_map(base, offsets, window_end, limit=len(encoded)) == encoded
    assert encode_offset_map(base, offsets, window_end, limit=len(encoded) - 1) is None


def test_bitset_limit_is_exact() -> None:
    completed = list(range(1, 16_000, 2))
    assert encode_offset_map(0, completed, 16_000, limit=2_679) == ref_bitset(0, completed, 16_000)
    assert len(ref_bitset(0, completed, 16_000)) == 2_679
    assert encode_offset_map(0, completed, 16_000, limit=2_678) is None


def test_no_completed_offsets_needs_no_map() -> None:
    assert encode_offset_map(5, [], 100) == ""
    assert encode_offset_map(5, iter(()), 5) == ""


# ---------------------------------------------------------------------------------------------------
# Bounded work
# ---------------------------------------------------------------------------------------------------


def test_huge_window_with_one_completed_run_is_a_small_rle() -> None:
    base = 2**45
    window_end = base + 2**38
    completed = CountingIterable(range(base + 5, base + 1_005))
    started = time.perf_counter()
    encoded = encode_offset_map(base, completed, window_end)
    assert time.perf_counter() - started < 1.0
    assert completed.consumed == 1_000
    # runs: 5 incomplete, 1000 completed, the rest incomplete
    assert encoded == text(b"\x01R" + varint(base) + varint(2**38) + varint(5) + varint(1000) + varint(2**38 - 1005))
    assert len(encoded) == 37
    decoded = decode_offset_map(encoded, base)
    assert decoded == OffsetMap(base=base, length=2**38, completed=((base + 5, base + 1_005),))


def test_alternating_window_too_big_stops_early() -> None:
    base = 7
    window_end = base + 50_000
    offsets = CountingIterable(range(base + 1, window_end, 2))  # 25_000 offsets, alternating
    assert encode_offset_map(base, offsets, window_end) is None
    # Bitset needs 6_250 bytes (impossible), and the RLE is certain to overflow after ~1_500 offsets.
    assert 1_000 < offsets.consumed < 1_600


def test_alternating_window_small_limit_stops_almost_immediately() -> None:
    offsets = CountingIterable(range(1, 10_000, 2))
    assert encode_offset_map(0, offsets, 10_000, limit=20) is None
    assert offsets.consumed < 10


def test_limit_below_header_stops_at_the_first_run() -> None:
    offsets = CountingIterable(range(1, 1_000, 2))
    assert encode_offset_map(0, offsets, 1_000, limit=8) is None
    assert offsets.consumed == 2  # one offset of look-ahead to see where the first run ends


def test_ranges_too_big_for_a_huge_window_stop_early() -> None:
    base = 5
    ranges = CountingIterable((base + 2 * i + 1, base + 2 * i + 2) for i in range(2**29))
    started = time.perf_counter()
    assert encode_offset_ranges(base, ranges, base + 2**30) is None
    assert time.perf_counter() - started < 1.0
    assert 1_000 < ranges.consumed < 1_600


def test_decode_of_a_2_pow_39_window_is_bounded() -> None:
    length = 2**39
    metadata = raw(b"\x01R" + varint(42) + varint(length) + varint(1) + varint(length - 2) + varint(1))
    started = time.perf_counter()
    decoded = decode_offset_map(metadata, 42)
    assert time.perf_counter() - started < 0.5
    assert decoded is not None
    assert decoded.completed == ((43, 42 + length - 1),)
    assert decoded.completed_count == length - 2
    assert decoded.contains(43)
    assert decoded.contains(42 + length - 2)
    assert not decoded.contains(42)
    assert not decoded.contains(42 + length - 1)


# ---------------------------------------------------------------------------------------------------
# Foreign metadata and mismatched offsets
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", ["", "hello", "PYR1:AQ", "pyr2:AVIAAQE", " pyr1:AVIAAgEB", "{json}"])
def test_foreign_metadata_is_not_a_map(metadata: str) -> None:
    assert not is_offset_map(metadata)
    assert decode_offset_map(metadata, 0) is None


def test_tampered_base_is_rejected() -> None:
    encoded = encode_offset_map(1_000, [1_002], 1_010)
    assert encoded is not None
    with pytest.raises(OffsetMapError, match="map is for offset 1000, committed offset is 999"):
        decode_offset_map(encoded, 999)
    tampered = raw(b"\x01R" + varint(1_001) + varint(10) + bytes([2, 1, 7]))
    with pytest.raises(OffsetMapError, match="map is for offset 1001, committed offset is 1000"):
        decode_offset_map(tampered, 1_000)


# ---------------------------------------------------------------------------------------------------
# Defensive decoding
# ---------------------------------------------------------------------------------------------------

REJECTED = [
    pytest.param(PREFIX + "A" * 8_200, "more than 8192", id="too-long"),
    pytest.param(PREFIX + "AV+A", "base64", id="plus-not-urlsafe"),
    pytest.param(PREFIX + "AVIA==", "base64", id="padded"),
    pytest.param(PREFIX + "AVIAA", "base64", id="impossible-length"),
    pytest.param(PREFIX + "AVIé", "base64", id="non-ascii"),
    pytest.param(PREFIX, "truncated", id="empty-body"),
    pytest.param(raw(b"\x01"), "truncated", id="only-version"),
    pytest.param(raw(b"\x02R\x00\x02\x01\x01"), "version 2", id="wrong-version"),
    pytest.param(raw(b"\x01X\x00\x02\x01\x01"), "unknown map kind 0x58", id="unknown-kind"),
    pytest.param(raw(b"\x01R"), "truncated varint for base", id="no-base"),
    pytest.param(raw(b"\x01R\x80"), "truncated varint for base", id="truncated-base"),
    pytest.param(raw(b"\x01R\x00"), "truncated varint for window", id="no-length"),
    pytest.param(raw(b"\x01R" + b"\xff" * 10 + b"\x01"), "longer than 10 bytes", id="varint-11-bytes"),
    pytest.param(raw(b"\x01R" + b"\xff" * 9 + b"\x7f"), "exceeds 64 bits", id="varint-over-64-bits"),
    pytest.param(raw(b"\x01R\x80\x00\x02\x01\x01"), "overlong varint", id="non-minimal-varint"),
    pytest.param(raw(b"\x01R\x00\x00"), "outside 1..", id="zero-length"),
    pytest.param(raw(b"\x01R\x00" + varint(2**40 + 1) + varint(1)), "outside 1..", id="length-over-2-40"),
    pytest.param(raw(b"\x01R\x00\x05\x02\x02"), "sum to 4, window length is 5", id="runs-short"),
    pytest.param(raw(b"\x01R\x00\x05\x02\x02\x02"), "exceed the window", id="runs-long"),
    pytest.param(raw(b"\x01R\x00\x05\x00\x03\x02"), "zero-length run", id="zero-first-run"),
    pytest.param(raw(b"\x01R\x00\x05\x02\x00\x03"), "zero-length run", id="zero-middle-run"),
    pytest.param(raw(b"\x01R\x00\x05\x02\x81"), "truncated varint for run", id="truncated-run"),
    pytest.param(raw(b"\x01R\x00\x05"), "sum to 0", id="no-runs"),
    pytest.param(raw(b"\x01B\x00\x09\x02"), "1 bytes, window length 9 needs 2", id="bitset-short"),
    pytest.param(raw(b"\x01B\x00\x08\x02\x00"), "2 bytes, window length 8 needs 1", id="bitset-long"),
    pytest.param(raw(b"\x01B\x00\x05\x22"), "beyond the window", id="bitset-bit-beyond"),
    pytest.param(raw(b"\x01B\x00\x05\x03"), "committed offset itself", id="bitset-bit-0"),
    pytest.param(raw(b"\x01B\x00" + varint(2**40) + b"\x02"), "window length 1099511627776 needs", id="bitset-huge"),
]


@pytest.mark.parametrize(("metadata", "message"), REJECTED)
def test_corrupt_maps_are_rejected_with_a_reason(metadata: str, message: str) -> None:
    with pytest.raises(OffsetMapError, match=message):
        decode_offset_map(metadata, 0)


def test_valid_bitset_decodes() -> None:
    # window of 10 from base 0: completed 1, 2, 7, 8, 9
    metadata = raw(b"\x01B\x00\x0a" + bytes([0b1000_0110, 0b0000_0011]))
    assert decode_offset_map(metadata, 0) == OffsetMap(base=0, length=10, completed=((1, 3), (7, 10)))


def check_well_formed(result: OffsetMap | None, committed: int) -> None:
    assert result is not None
    assert result.base == committed
    assert 0 < result.length <= 2**40
    previous = result.base
    for start, end in result.completed:
        assert previous < start < end <= result.base + result.length
        previous = end


def decode_or_error(metadata: str, committed: int) -> None:
    started = time.perf_counter()
    try:
        result = decode_offset_map(metadata, committed)
    except OffsetMapError:
        pass
    else:
        check_well_formed(result, committed)
    assert time.perf_counter() - started < 0.5


@settings(max_examples=500, deadline=None)
@given(body=st.text(max_size=300), committed=st.integers(min_value=0, max_value=10))
def test_fuzz_arbitrary_text_only_raises_offset_map_error(body: str, committed: int) -> None:
    decode_or_error(PREFIX + body, committed)


@settings(max_examples=500, deadline=None)
@given(
    head=st.sampled_from([b"", b"\x01", b"\x01R", b"\x01B", b"\x01R\x00", b"\x01B\x00"]),
    tail=st.binary(max_size=200),
    committed=st.integers(min_value=0, max_value=3),
)
def test_fuzz_random_bytes_only_raise_offset_map_error(head: bytes, tail: bytes, committed: int) -> None:
    decode_or_error(raw(head + tail), committed)


@settings(max_examples=300, deadline=None)
@given(window=windows(), data=st.data())
def test_fuzz_mutated_valid_maps_only_raise_offset_map_error(
    window: tuple[int, list[int], int], data: st.DataObject
) -> None:
    base, completed, window_end = window
    encoded = encode_offset_map(base, completed, window_end)
    if not encoded:
        return
    binary = bytearray(base64.urlsafe_b64decode(encoded[len(PREFIX) :] + "=" * (-(len(encoded) - len(PREFIX)) % 4)))
    index = data.draw(st.integers(min_value=0, max_value=len(binary) - 1))
    binary[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(binary)))
    decode_or_error(raw(bytes(binary[:cut])), base)


# ---------------------------------------------------------------------------------------------------
# Range input
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows(), data=st.data())
def test_ranges_encode_like_offsets_even_when_split(window: tuple[int, list[int], int], data: st.DataObject) -> None:
    base, completed, window_end = window
    # Split maximal ranges into adjacent pieces: the encoder must merge them back.
    pieces: list[tuple[int, int]] = []
    for start, end in ref_ranges(completed):
        cut = data.draw(st.integers(min_value=start, max_value=end))
        pieces += [(a, b) for a, b in ((start, cut), (cut, end)) if a < b]
    assert encode_offset_ranges(base, pieces, window_end) == encode_offset_map(base, completed, window_end)


def test_adjacent_ranges_are_merged() -> None:
    encoded = encode_offset_ranges(0, [(38, 39), (39, 40)], 40)
    assert encoded == text(b"\x01R\x00\x28\x26\x02")
    big = encode_offset_ranges(100, [(101, 2_000), (2_000, 10**9), (10**9 + 5, 10**9 + 6)], 10**10)
    expected = [1, 10**9 - 101, 5, 1, 10**10 - 10**9 - 6]
    assert big == text(b"\x01R" + varint(100) + varint(10**10 - 100) + b"".join(map(varint, expected)))
    assert decode_offset_map(big, 100) == OffsetMap(
        base=100, length=10**10 - 100, completed=((101, 10**9), (10**9 + 5, 10**9 + 6))
    )


def test_bitset_from_ranges_sets_whole_bytes() -> None:
    encoded = encode_offset_ranges(0, [(3, 21), (30, 31)], 32)
    assert encoded == text(b"\x01B\x00\x20" + bytes([0xF8, 0xFF, 0x1F, 0x40]))
    assert encoded == ref_bitset(0, [*range(3, 21), 30], 32)


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([(10, 12)], r"outside \(10, 20\]"),
        ([(12, 12)], "empty"),
        ([(12, 21)], r"outside \(10, 20\]"),
        ([(12, 15), (14, 16)], r"got \[14, 16\) after \[12, 15\)"),
        ([(12, 15), (17, 17)], "non-empty"),
        ([(12, 15), (17, 21)], "inside"),
        ([(15, 17), (12, 13)], "ascending"),
    ],
)
def test_encode_ranges_rejects_bad_ranges(ranges: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_offset_ranges(10, ranges, 20)


def test_no_ranges_need_no_map() -> None:
    assert encode_offset_ranges(3, [], 3) == ""


# ---------------------------------------------------------------------------------------------------
# Argument checking and the OffsetMap invariants
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "offsets", "window_end", "message"),
    [
        (-1, [1], 5, "base must be >= 0"),
        (10, [10], 20, r"strictly ascending and in \(10, 20\); got 10 after 10"),
        (10, [20], 20, r"strictly ascending and in \(10, 20\); got 20 after 10"),
        (10, [12, 12], 20, "strictly ascending"),
        (10, [13, 12], 20, "strictly ascending"),
        (10, [12, 25], 20, "strictly ascending and in"),
        (0, [1], 2**40 + 1, "exceeds the maximum"),
    ],
)
def test_encode_rejects_bad_arguments(base: int, offsets: list[int], window_end: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_offset_map(base, offsets, window_end)


def test_encode_rejects_limit_beyond_decodable() -> None:
    with pytest.raises(ValueError, match="limit"):
        encode_offset_map(0, [1], 5, limit=9_000)


@pytest.mark.parametrize(
    "completed",
    [((10, 12),), ((12, 11),), ((11, 13), (13, 15)), ((11, 14), (12, 15)), ((11, 21),), ((14, 15), (11, 12))],
)
def test_offset_map_rejects_broken_ranges(completed: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValueError, match="completed ranges"):
        OffsetMap(base=10, length=10, completed=completed)


def test_offset_map_contains_uses_ranges() -> None:
    offset_map = OffsetMap(base=100, length=1_000, completed=((105, 110), (200, 201), (900, 1_100)))
    assert offset_map.completed_count == 5 + 1 + 200
    inside = [105, 109, 200, 900, 1_099]
    outside = [0, 100, 104, 110, 199, 201, 899, 1_100, 5_000]
    assert [offset_map.contains(o) for o in inside] == [True] * 5
    assert [offset_map.contains(o) for o in outside] == [False] * 9
