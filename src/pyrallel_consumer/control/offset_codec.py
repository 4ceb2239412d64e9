"""Encode the completed-but-uncommitted offsets of a partition into Kafka commit metadata.

Kafka only stores one committed offset ``C`` per partition: the lowest offset that is not yet
processed.  Records above ``C`` may already be complete (they were processed out of order); without
extra information they would be processed again after a restart or rebalance.  This module packs the
set of completed offsets in the window ``[C, C + L)`` into the commit *metadata string*, which Kafka
stores next to the offset, so the next owner of the partition can skip them.

Kafka's default ``offset.metadata.max.bytes`` is 4096, so an encoding is only produced when it fits in
:data:`MAX_METADATA_CHARS`; otherwise the caller commits without a map (and logs a warning).

Text format: ``"pyr1:"`` followed by unpadded urlsafe base64 of::

    0x01 (version) | kind (b"R" or b"B") | varint base | varint L | payload

* ``R`` (run-length): varint run lengths, alternating, starting with a run of *not completed* offsets
  (offset ``base`` is never complete). Every run is >= 1 and the runs sum to exactly ``L``.
* ``B`` (bitset): ``ceil(L / 8)`` bytes; bit ``i`` (LSB first within each byte) set means offset
  ``base + i`` is complete. Bit 0 and bits at or beyond ``L`` are always clear.

Varints are unsigned LEB128, at most 10 bytes, minimally encoded.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter

__all__ = [
    "MAX_METADATA_CHARS",
    "OffsetMap",
    "OffsetMapError",
    "decode_offset_map",
    "encode_offset_map",
    "encode_offset_ranges",
    "is_offset_map",
]

MAX_METADATA_CHARS = 4000
"""Longest map we write: leaves headroom under Kafka's default 4096-byte metadata limit."""

_PREFIX = "pyr1:"
_VERSION = 0x01
_KIND_RLE = ord("R")
_KIND_BITSET = ord("B")

_MAX_DECODE_CHARS = 8192
"""Decoding refuses anything longer, so a hostile or corrupt string cannot cost much work."""

_MAX_WINDOW = 2**40
"""Largest window length accepted; far beyond any realistic gap between committed and fetched offsets."""

_MAX_VARINT_BYTES = 10
_MAX_VARINT_VALUE = 2**64 - 1

_BASE64_URLSAFE_BODY = re.compile(r"[A-Za-z0-9_-]*")


class OffsetMapError(ValueError):
    """Metadata carries our prefix but is not a valid map for this partition and offset."""


@dataclass(frozen=True, slots=True)
class OffsetMap:
    """Completed offsets in the window ``[base, base + length)`` above the committed offset ``base``.

    ``completed`` holds sorted, non-overlapping, non-adjacent half-open ranges ``(start, end)`` of
    absolute offsets.  Ranges rather than a set keep memory proportional to the number of runs, not to
    the window length, which may be huge.
    """

    base: int
    length: int
    completed: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.base < 0:
            raise ValueError(f"base must be >= 0, got {self.base}")
        if self.length <= 0:
            raise ValueError(f"length must be > 0, got {self.length}")
        window_end = self.base + self.length
        # `base` itself is the lowest incomplete offset, so every range starts strictly above it.
        previous_end = self.base
        for start, end in self.completed:
            if start <= previous_end or end <= start or end > window_end:
                raise ValueError(
                    f"completed ranges must be sorted, disjoint, non-adjacent, non-empty and inside "
                    f"({self.base}, {window_end}); got {self.completed!r}"
                )
            previous_end = end

    def contains(self, offset: int) -> bool:
        """Whether ``offset`` is recorded as completed (binary search over the ranges)."""
        index = bisect_right(self.completed, offset, key=itemgetter(0)) - 1
        return index >= 0 and offset < self.completed[index][1]

    @property
    def completed_count(self) -> int:
        """Number of completed offsets in the window."""
        return sum(end - start for start, end in self.completed)


def is_offset_map(metadata: str) -> bool:
    """Whether ``metadata`` was written by this codec (as opposed to another client)."""
    return metadata.startswith(_PREFIX)


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def _append_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as unsigned LEB128."""
    if value < 0:
        raise ValueError(f"varint value must be >= 0, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _max_binary_length(limit: int) -> int:
    """Largest binary length whose text form fits in ``limit`` characters (-1 if none does)."""
    budget = limit - len(_PREFIX)
    if budget < 0:
        return -1
    return (3 * budget) // 4


def _to_text(binary: bytes | bytearray) -> str:
    return _PREFIX + base64.urlsafe_b64encode(bytes(binary)).rstrip(b"=").decode("ascii")


def _header(kind: int, base: int, length: int) -> bytearray:
    out = bytearray((_VERSION, kind))
    _append_varint(out, base)
    _append_varint(out, length)
    return out


def _set_bits(bits: bytearray, low: int, high: int) -> None:
    """Set bits ``low .. high-1`` (LSB first), whole bytes at a time where possible."""
    while low < high and low & 7:
        bits[low >> 3] |= 1 << (low & 7)
        low += 1
    whole_end = high & ~7
    if low < whole_end:
        bits[low >> 3 : whole_end >> 3] = b"\xff" * ((whole_end - low) >> 3)
        low = whole_end
    while low < high:
        bits[low >> 3] |= 1 << (low & 7)
        low += 1


def _check_arguments(base: int, limit: int) -> None:
    if base < 0:
        raise ValueError(f"base must be >= 0, got {base}")
    if not 0 <= limit <= _MAX_DECODE_CHARS:
        raise ValueError(f"limit must be in 0..{_MAX_DECODE_CHARS}, got {limit}")


def encode_offset_ranges(
    base: int,
    completed_ranges_in_order: Iterable[tuple[int, int]],
    window_end: int,
    limit: int = MAX_METADATA_CHARS,
) -> str | None:
    """Encode completed offsets given as half-open ranges ``(start, end)``; see :func:`encode_offset_map`.

    Ranges must be ascending, non-empty, non-overlapping and inside ``(base, window_end]`` (so ``base``
    itself is never complete); adjacent ranges are merged.  Ranges let callers describe long completed
    stretches without enumerating every offset.
    """
    _check_arguments(base, limit)
    iterator = iter(completed_ranges_in_order)
    first = next(iterator, None)
    if first is None:
        return ""
    run_start, run_end = first
    if not base < run_start < run_end <= window_end:
        raise ValueError(f"completed range [{run_start}, {run_end}) is empty or outside ({base}, {window_end}]")
    length = window_end - base
    if length > _MAX_WINDOW:
        raise ValueError(f"window length {length} exceeds the maximum of {_MAX_WINDOW}")

    max_binary = _max_binary_length(limit)
    rle_header = _header(_KIND_RLE, base, length)
    bitset_header = _header(_KIND_BITSET, base, length)
    bitset_bytes = (length + 7) // 8
    rle: bytearray | None = rle_header if len(rle_header) <= max_binary else None
    # The bitset has a fixed size, known up front; only allocate it when it can fit.
    bitset: bytearray | None = bytearray(bitset_bytes) if len(bitset_header) + bitset_bytes <= max_binary else None
    if rle is None and bitset is None:
        return None
    if bitset is not None:
        _set_bits(bitset, run_start - base, run_end - base)

    # `covered` is the first offset not yet described by an emitted run; the completed run being built
    # (not yet emitted, as a following adjacent range may extend it) is [run_start, run_end).
    covered = base
    for start, end in iterator:
        if not run_end <= start < end <= window_end:
            raise ValueError(
                f"completed ranges must be ascending, non-empty, non-overlapping and inside "
                f"({base}, {window_end}]; got [{start}, {end}) after [{run_start}, {run_end})"
            )
        if bitset is not None:
            _set_bits(bitset, start - base, end - base)
        if start == run_end:
            run_end = end
            continue
        if rle is not None:
            _append_varint(rle, run_start - covered)
            _append_varint(rle, run_end - run_start)
            # Bytes emitted so far are a lower bound on the final size.
            if len(rle) > max_binary:
                rle = None
                if bitset is None:
                    return None
        covered = run_end
        run_start, run_end = start, end

    candidates: list[str] = []
    if rle is not None:
        _append_varint(rle, run_start - covered)
        _append_varint(rle, run_end - run_start)
        if window_end > run_end:
            _append_varint(rle, window_end - run_end)
        if len(rle) <= max_binary:
            candidates.append(_to_text(rle))
    if bitset is not None:
        candidates.append(_to_text(bitset_header + bitset))
    if not candidates:
        return None
    # min() keeps the first of equal lengths, so run-length wins a tie.
    return min(candidates, key=len)


def _ranges_of_offsets(offsets: Iterable[int], base: int, window_end: int) -> Iterator[tuple[int, int]]:
    """Group strictly ascending offsets into maximal consecutive ranges, lazily."""
    run_start = run_end = -1
    previous = base
    for offset in offsets:
        if not previous < offset < window_end:
            raise ValueError(
                f"completed offsets must be strictly ascending and in ({base}, {window_end}); "
                f"got {offset} after {previous}"
            )
        previous = offset
        if offset == run_end:
            run_end += 1
            continue
        if run_end != -1:
            yield run_start, run_end
        run_start, run_end = offset, offset + 1
    if run_end != -1:
        yield run_start, run_end


def encode_offset_map(
    base: int,
    completed_offsets_in_order: Iterable[int],
    window_end: int,
    limit: int = MAX_METADATA_CHARS,
) -> str | None:
    """Encode the completed offsets above the committed offset ``base`` as commit metadata.

    ``completed_offsets_in_order`` must be strictly ascending absolute offsets, each in
    ``(base, window_end)``; it is consumed lazily and may be a generator.  Returns ``""`` when nothing
    is completed (no map needed), the shorter of the run-length and bitset encodings (run-length on a
    tie) when one fits in ``limit`` characters, or ``None`` when neither fits.

    Work is bounded: the run-length encoding is abandoned as soon as it is certain to exceed the limit,
    and when the bitset cannot fit either (``ceil(L/8)`` bytes too many) the iterable is not consumed
    any further.  Memory never grows with the window length beyond the limit.

    Raises ``ValueError`` for invalid arguments (negative base, offsets out of order or outside the
    window, a window longer than 2**40, or a ``limit`` outside ``0..8192``).
    """
    _check_arguments(base, limit)
    return encode_offset_ranges(
        base, _ranges_of_offsets(completed_offsets_in_order, base, window_end), window_end, limit
    )


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _read_varint(data: bytes, position: int, what: str) -> tuple[int, int]:
    """Read one minimal unsigned LEB128 varint; return ``(value, next_position)``."""
    value = 0
    shift = 0
    for count in range(_MAX_VARINT_BYTES):
        index = position + count
        if index >= len(data):
            raise OffsetMapError(f"truncated varint for {what} at byte {position}")
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and count > 0:
                raise OffsetMapError(f"overlong varint for {what} at byte {position}")
            if value > _MAX_VARINT_VALUE:
                raise OffsetMapError(f"varint for {what} at byte {position} exceeds 64 bits")
            return value, index + 1
        shift += 7
    raise OffsetMapError(f"varint for {what} at byte {position} is longer than {_MAX_VARINT_BYTES} bytes")


def _decode_binary(body: str) -> bytes:
    if not body.isascii() or _BASE64_URLSAFE_BODY.fullmatch(body) is None:
        raise OffsetMapError("map is not unpadded urlsafe base64")
    if len(body) % 4 == 1:
        raise OffsetMapError("map has an impossible base64 length")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OffsetMapError(f"map is not valid base64: {exc}") from None


def _ranges_from_runs(data: bytes, position: int, base: int, length: int) -> list[tuple[int, int]]:
    """Turn alternating run lengths (incomplete first) into completed ranges."""
    ranges: list[tuple[int, int]] = []
    cursor = base
    window_end = base + length
    completed_run = False
    while position < len(data):
        run, position = _read_varint(data, position, "run length")
        if run == 0:
            raise OffsetMapError("zero-length run in run-length map")
        if cursor + run > window_end:
            raise OffsetMapError(f"runs exceed the window length {length}")
        if completed_run:
            ranges.append((cursor, cursor + run))
        cursor += run
        completed_run = not completed_run
    if cursor != window_end:
        raise OffsetMapError(f"runs sum to {cursor - base}, window length is {length}")
    return ranges


def _ranges_from_bitset(payload: bytes, base: int, length: int) -> list[tuple[int, int]]:
    """Turn an LSB-first bitset into completed ranges, touching each byte once."""
    expected = (length + 7) // 8
    if len(payload) != expected:
        raise OffsetMapError(f"bitset has {len(payload)} bytes, window length {length} needs {expected}")
    tail_bits = length & 7
    if tail_bits and payload[-1] >> tail_bits:
        raise OffsetMapError(f"bitset marks offsets beyond the window length {length}")
    if payload[0] & 1:
        raise OffsetMapError("bitset marks the committed offset itself as completed")
    ranges: list[tuple[int, int]] = []
    run_start = -1
    for byte_index, byte in enumerate(payload):
        if (byte == 0x00 and run_start == -1) or (byte == 0xFF and run_start != -1):
            continue
        for bit in range(8):
            offset = base + 8 * byte_index + bit
            if byte >> bit & 1:
                if run_start == -1:
                    run_start = offset
            elif run_start != -1:
                ranges.append((run_start, offset))
                run_start = -1
    if run_start != -1:
        ranges.append((run_start, base + length))
    return ranges


def decode_offset_map(metadata: str, committed_offset: int) -> OffsetMap | None:
    """Read the completed-offset map stored with ``committed_offset``.

    Returns ``None`` for empty or foreign metadata (written by some other client), which simply means
    no offsets above the committed one are known to be complete.  Raises :class:`OffsetMapError` when
    the metadata carries our prefix but is corrupt, or describes a different committed offset.  Work
    and memory are bounded by the string length, never by the window length.
    """
    if not is_offset_map(metadata):
        return None
    if len(metadata) > _MAX_DECODE_CHARS:
        raise OffsetMapError(f"map is {len(metadata)} characters, more than {_MAX_DECODE_CHARS}")
    data = _decode_binary(metadata[len(_PREFIX) :])
    if len(data) < 2:
        raise OffsetMapError("map is truncated before its header")
    if data[0] != _VERSION:
        raise OffsetMapError(f"unsupported map version {data[0]}")
    kind = data[1]
    if kind not in (_KIND_RLE, _KIND_BITSET):
        raise OffsetMapError(f"unknown map kind {kind:#04x}")
    base, position = _read_varint(data, 2, "base offset")
    length, position = _read_varint(data, position, "window length")
    if not 0 < length <= _MAX_WINDOW:
        raise OffsetMapError(f"window length {length} is outside 1..{_MAX_WINDOW}")

    if kind == _KIND_RLE:
        ranges = _ranges_from_runs(data, position, base, length)
    else:
        ranges = _ranges_from_bitset(data[position:], base, length)

    if base != committed_offset:
        raise OffsetMapError(f"map is for offset {base}, committed offset is {committed_offset}")
    return OffsetMap(base=base, length=length, completed=tuple(ranges))
