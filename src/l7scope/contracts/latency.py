"""Mergeable latency histogram shared by the collector, the node agent and the server.

Durations are recorded in microseconds into log-linear buckets: values below 16 us have a bucket
each; above that every power of two is split into 8 buckets, so a bucket's width is at most 1/8 of
its lower bound (relative error of a reported percentile <= 6.25 % around the bucket midpoint).
A histogram is a sparse `dict[int, int]` (bucket index -> count); merging is adding counts, so
records can be combined at any stage (collector interval, node flush, server query) and the
percentiles stay consistent. Bucket indexes are part of the wire and storage contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Histogram = dict[int, int]

_SUB_BITS = 3  # 2**3 = 8 buckets per power of two
_LINEAR = 2 << _SUB_BITS  # 16: values below this get one bucket each


def bucket_of(us: int) -> int:
    """Bucket index of a duration in microseconds (negative values count as 0)."""
    if us < _LINEAR:
        return us if us > 0 else 0
    shift = us.bit_length() - _SUB_BITS - 1
    return (shift << _SUB_BITS) + (us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """[lower, upper) bounds in microseconds of a bucket index."""
    if index < _LINEAR:
        return index, index + 1
    shift = (index >> _SUB_BITS) - 1
    mantissa = (index & ((1 << _SUB_BITS) - 1)) | (1 << _SUB_BITS)
    return mantissa << shift, (mantissa + 1) << shift


def add(hist: Histogram, us: int, count: int = 1) -> None:
    """Record `count` requests of duration `us` into `hist` in place."""
    b = bucket_of(us)
    hist[b] = hist.get(b, 0) + count


def merge_into(target: Histogram, other: Mapping[int, int]) -> None:
    """Add every bucket of `other` into `target` in place."""
    for b, c in other.items():
        target[b] = target.get(b, 0) + c


def merged(hists: Iterable[Mapping[int, int]]) -> Histogram:
    out: Histogram = {}
    for h in hists:
        merge_into(out, h)
    return out


def quantile(hist: Mapping[int, int], q: float) -> int | None:
    """The q-quantile (0..1) in microseconds, as the midpoint of its bucket; None when empty."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank and hist[b] > 0:
            lo, hi = bucket_bounds(b)
            return lo if hi - lo == 1 else (lo + hi) // 2
    lo, hi = bucket_bounds(max(hist))
    return lo if hi - lo == 1 else (lo + hi) // 2


def to_wire(hist: Mapping[int, int]) -> dict[str, int]:
    """JSON form (object keys must be strings)."""
    return {str(b): c for b, c in sorted(hist.items()) if c}


def from_wire(obj: Mapping[str, int] | Mapping[int, int] | None) -> Histogram:
    """Inverse of to_wire; tolerant of int keys. Raises ValueError on bad keys or counts."""
    out: Histogram = {}
    for k, v in (obj or {}).items():
        b, c = int(k), int(v)
        if b < 0 or c < 0:
            raise ValueError(f"bad histogram bucket {k!r}: {v!r}")
        if c:
            out[b] = out.get(b, 0) + c
    return out
