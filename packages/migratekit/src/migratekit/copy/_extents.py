"""Extent planning: what to copy, what to zero, in which request sizes.

An *extent* here is ``(offset, length, zero)``: ``zero`` extents are written with
WRITE_ZEROES, the others are read from the source and written to the target. Plans come from
the source's ``base:allocation`` map (full copy) intersected with a set of changed ranges
(incremental: an extent list or the ``qemu:dirty-bitmap:NAME`` context). Zero detection is
what the server reports, never guessed by sampling data.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import NbdProtocolError, UsageError
from ..nbd import NbdClient
from ..nbd import _protocol as p

Extent = tuple[int, int, bool]
Range = tuple[int, int]

#: Largest range asked for in one BLOCK_STATUS request (32-bit length, 1 MiB aligned).
STATUS_STEP = 0x7FF00000
#: Largest WRITE_ZEROES request (no payload, so larger than the 32 MiB data limit is fine).
ZERO_STEP = 1 << 30


class ExtentList:
    """A compact list of ``(offset, length, zero)`` extents: 16 bytes each, not ~120.

    Appending an extent that continues the last one with the same kind extends it. Keeps the
    plan of a badly fragmented multi-TiB disk within a few hundred MiB at worst.
    """

    __slots__ = ("_a",)

    def __init__(self, items: Iterable[Extent] = ()) -> None:
        self._a = array("q")
        for offset, length, zero in items:
            self.append(offset, length, zero)

    def append(self, offset: int, length: int, zero: bool) -> None:
        """Add an extent (merged into the last one when contiguous and of the same kind)."""
        a = self._a
        if a:
            last_len = a[-1]
            last_zero = last_len < 0
            size = -last_len if last_zero else last_len
            if last_zero == zero and a[-2] + size == offset:
                a[-1] = -(size + length) if zero else size + length
                return
        a.append(offset)
        a.append(-length if zero else length)

    def last_data_end(self) -> int | None:
        """End offset of the last extent when it is data, else None."""
        a = self._a
        if not a or a[-1] < 0:
            return None
        return a[-2] + a[-1]

    def __len__(self) -> int:
        return len(self._a) // 2

    def __getitem__(self, index: int) -> Extent:
        if index < 0:
            index += len(self)
        length = self._a[2 * index + 1]
        return self._a[2 * index], abs(length), length < 0

    def __iter__(self) -> Iterator[Extent]:
        a = self._a
        for i in range(0, len(a), 2):
            length = a[i + 1]
            yield a[i], -length if length < 0 else length, length < 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExtentList | list):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"ExtentList({list(self)!r})"


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort ranges and merge the overlapping or touching ones; drop empty ones."""
    out: list[list[int]] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        if out and offset <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], offset + length)
            out[-1][1] = end - out[-1][0]
        else:
            out.append([offset, length])
    return [(o, n) for o, n in out]


def parse_extent_list(data: Any, field: str = "changed_extents") -> list[Range]:
    """Validate a changed-extent list: ``[[offset, length], ...]`` or ``[{"start", "length"}]``.

    A VMware ``DiskChangeInfo`` object (``{"changedArea": [...]}``) is accepted too.
    """
    if isinstance(data, dict) and "changedArea" in data:
        data = data["changedArea"]
    if not isinstance(data, list):
        raise UsageError("expected a list of [offset, length] pairs", field)
    out: list[Range] = []
    for i, item in enumerate(data):
        where = f"{field}[{i}]"
        if isinstance(item, dict):
            offset, length = item.get("start", item.get("offset")), item.get("length")
        elif isinstance(item, list | tuple) and len(item) == 2:
            offset, length = item
        else:
            raise UsageError("expected [offset, length] or {start, length}", where)
        for name, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be a non-negative integer, got {value!r}", where)
        out.append((int(offset), int(length)))  # type: ignore[arg-type]
    return out


def load_extent_file(path: str | Path, field: str = "changed_extents_file") -> list[Range]:
    """Read and validate a JSON changed-extent file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", field) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}", field) from None
    return parse_extent_list(data, field)


def context_map(client: NbdClient, context: str, start: int, end: int) -> Iterator[Range | Extent]:
    """Walk ``context`` over [start, end) and yield ``(offset, length, flags)`` runs."""
    ctx_id = client.info.contexts[context]
    offset = start
    while offset < end:
        want = min(end - offset, STATUS_STEP)
        statuses = client.block_status(offset, want).get(ctx_id)
        if not statuses:
            raise NbdProtocolError(
                f"no {context} extents returned", server=client.server, offset=offset
            )
        for length, flags in statuses:
            if length == 0:
                raise NbdProtocolError("zero-length extent", server=client.server, offset=offset)
            length = min(length, end - offset)
            yield offset, length, flags  # type: ignore[misc]
            offset += length
            if offset >= end:
                break


def allocation(client: NbdClient, start: int, end: int) -> ExtentList:
    """base:allocation over [start, end) as merged ``(offset, length, zero)`` extents."""
    out = ExtentList()
    for offset, length, flags in context_map(client, p.BASE_ALLOCATION, start, end):  # type: ignore[misc]
        out.append(offset, length, bool(flags & p.STATE_ZERO))
    return out


def dirty_ranges(client: NbdClient, bitmap: str, size: int) -> list[Range]:
    """The dirty ranges of ``qemu:dirty-bitmap:<bitmap>`` over the whole export."""
    ranges: list[Range] = []
    context = p.DIRTY_BITMAP_PREFIX + bitmap
    for offset, length, flags in context_map(client, context, 0, size):  # type: ignore[misc]
        if flags & p.STATE_DIRTY:
            if ranges and ranges[-1][0] + ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
            else:
                ranges.append((offset, length))
    return ranges


def intersect(ranges: list[Range], extents: ExtentList | list[Extent]) -> ExtentList:
    """The parts of ``extents`` inside ``ranges`` (both sorted, non-overlapping)."""
    out = ExtentList()
    i = 0
    for offset, length in ranges:
        end = offset + length
        while i < len(extents) and extents[i][0] + extents[i][1] <= offset:
            i += 1
        j = i
        while j < len(extents) and extents[j][0] < end:
            e_off, e_len, zero = extents[j]
            lo, hi = max(offset, e_off), min(end, e_off + e_len)
            if hi > lo:
                out.append(lo, hi - lo, zero)
            j += 1
    return out


def clip_from(extents: Iterable[Extent], start: int) -> ExtentList:
    """The parts of ``extents`` at or after ``start`` (what a resumed copy still has to do)."""
    out = ExtentList()
    for offset, length, zero in extents:
        end = offset + length
        if end <= start:
            continue
        lo = max(offset, start)
        out.append(lo, end - lo, zero)
    return out


def coalesce(extents: Iterable[Extent], gap: int) -> ExtentList:
    """Turn zero runs of at most ``gap`` bytes between two data runs into data (fewer requests).

    Only touching extents are merged, so a plan never grows beyond its ranges.
    """
    out = ExtentList()
    held: tuple[int, int] | None = None  # a short zero run right after data, undecided
    for offset, length, zero in extents:
        if held is not None:
            h_off, h_len = held
            held = None
            if not zero and h_off + h_len == offset and out.last_data_end() == h_off:
                out.append(h_off, h_len, False)
                out.append(offset, length, False)
                continue
            out.append(h_off, h_len, True)
        if zero and 0 < length <= gap and out.last_data_end() == offset:
            held = (offset, length)
            continue
        out.append(offset, length, zero)
    if held is not None:
        out.append(held[0], held[1], True)
    return out


def split(
    extents: Iterable[Extent], request_size: int, zero_step: int = ZERO_STEP
) -> Iterator[Extent]:
    """Cut extents into requests: data up to ``request_size``, zeroes up to ``zero_step``."""
    for offset, length, zero in extents:
        step = zero_step if zero else request_size
        end = offset + length
        while offset < end:
            n = min(step, end - offset)
            yield offset, n, zero
            offset += n
