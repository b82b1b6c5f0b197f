"""Extent planning: what to copy, what to zero, in which request sizes.

An *extent* here is ``(offset, length, zero)``: ``zero`` extents are written with
WRITE_ZEROES, the others are read from the source and written to the target. Plans come from
the source's ``base:allocation`` map (full copy) intersected with a set of changed ranges
(incremental: an extent list or the ``qemu:dirty-bitmap:NAME`` context). Zero detection is
what the server reports, never guessed by sampling data.
"""

from __future__ import annotations

import json
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
        out.append((offset, length))
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


def allocation(client: NbdClient, start: int, end: int) -> list[Extent]:
    """base:allocation over [start, end) as merged ``(offset, length, zero)`` extents."""
    out: list[Extent] = []
    for offset, length, flags in context_map(client, p.BASE_ALLOCATION, start, end):  # type: ignore[misc]
        zero = bool(flags & p.STATE_ZERO)
        if out and out[-1][2] == zero and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + length, zero)
        else:
            out.append((offset, length, zero))
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


def intersect(ranges: list[Range], extents: list[Extent]) -> list[Extent]:
    """The parts of ``extents`` inside ``ranges`` (both sorted, non-overlapping)."""
    out: list[Extent] = []
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
                out.append((lo, hi - lo, zero))
            j += 1
    return out


def coalesce(extents: list[Extent], gap: int) -> list[Extent]:
    """Turn zero runs of at most ``gap`` bytes between two data runs into data (fewer requests).

    Only touching extents are merged, so a plan never grows beyond its ranges.
    """
    if gap <= 0 or len(extents) < 3:
        return extents
    out: list[Extent] = []
    for ext in extents:
        if out and out[-1][0] + out[-1][1] == ext[0]:
            last = out[-1]
            if last[2] == ext[2]:
                out[-1] = (last[0], last[1] + ext[1], last[2])
                continue
            if (
                not ext[2]
                and last[2]
                and last[1] <= gap
                and len(out) >= 2
                and not out[-2][2]
                and out[-2][0] + out[-2][1] == last[0]
            ):
                prev = out[-2]
                out[-2:] = [(prev[0], prev[1] + last[1] + ext[1], False)]
                continue
        out.append(ext)
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
