"""Bulk ingest (contracts.bulk): NDJSON body -> validated records + line rejections -> store.

`parse_body()` is pure (the time is passed in): it checks each line on its own (size, UTF-8,
JSON nesting, the record schema and its bounds, histogram keys, integers within their stored
widths, times not in the future nor inverted) so one bad line never costs the others. Unknown
fields of a record of a newer schema version are dropped and counted, the record kept.
A body is handled in pieces of about CHUNK_BYTES (`parse_chunks`); a piece whose lines are all
good (the usual case) is decoded in one msgspec call straight from the body and checked per
column; any bad line sends that piece through the line-by-line path instead. `Ingestor` hands
the pieces to the store as it consumes them (each piece's records freed before the next is
decoded), and adds the batch-id de-duplication (remembered by the store, so across restarts)
and the counters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import gt, mul
from typing import Final

import msgspec

from l7scope.contracts.bulk import MAX_LINE_BYTES, BulkResult, Rejection
from l7scope.contracts.fields import COLUMNS, HIST_FIELD
from l7scope.contracts.gcpause import gc_paused
from l7scope.contracts.record import (
    FIELDS,
    MAX_DURATION_SUM_NS,
    MAX_FUTURE_S,
    SCHEMA_VERSION,
    L7Record,
    RecordError,
    decode_record,
)
from l7scope.server.columns import ColumnBatch, to_columns
from l7scope.server.fields import int_width
from l7scope.server.limits import MAX_JSON_DEPTH, too_deep
from l7scope.server.metrics import EdgeCounts, Metrics, edge_counts
from l7scope.server.store.base import Store

MAX_LISTED_REJECTIONS: Final = 1000
#: Bodies are decoded, stored and freed in pieces of about this size (a node agent's batch of
#: 5,000 records is one piece): the records of a 64 MiB body are never all alive at once.
CHUNK_BYTES: Final = 8 * 1024 * 1024
#: Rejected lines after which the rest of a body is not decoded (a node agent's batch has 5,000).
MAX_REJECTED_LINES: Final = 100_000
MAX_BUCKET: Final = 65535  # stored as UInt16
_BATCH_ID: Final = re.compile(r"[\x21-\x7e]{1,200}")
_record_decoder: Final = msgspec.json.Decoder(L7Record)
_WHITESPACE: Final = frozenset(b" \t\r\n")
_OPEN_BRACE: Final = ord("{")
_CLOSE_BRACE: Final = ord("}")
#: Integer columns narrower than the schema's unbounded non-negative ints: the stores keep
#: them as UInt16/UInt32/UInt64, so a larger value is a bad line, not a failed batch.
_INT_LIMITS: Final = tuple((c, (1 << {"u16": 16, "u32": 32, "u64": 64}[int_width(c)]) - 1)
                           for c, k in COLUMNS.items() if k == "int")
_COUNT_LIMIT: Final = (1 << 64) - 1  # histogram counts: UInt64
_KNOWN: Final = frozenset(FIELDS)
_raw_object: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_encoder: Final = msgspec.json.Encoder()


class BadBatchId(ValueError):
    pass


@dataclass
class Parsed:
    records: list[L7Record]
    rejected: list[Rejection]
    rejected_total: int
    columns: ColumnBatch  # the records as columns (server.columns.to_columns)
    fields_ignored: int = 0  # unknown fields of newer-schema records, dropped
    stopped: int | None = None  # body offset where decoding stopped (MAX_REJECTED_LINES), if it did


def _bucket_ok(k: str) -> bool:
    return k.isascii() and k.isdigit() and len(k) <= 5 and int(k) <= MAX_BUCKET


def _width_error(rec: L7Record) -> str | None:
    for name, limit in _INT_LIMITS:
        if getattr(rec, name) > limit:
            return f"{name}: {getattr(rec, name)} is over the stored maximum {limit}"
    if rec.duration_hist and max(rec.duration_hist.values()) > _COUNT_LIMIT:
        return f"duration_hist: a count is over the stored maximum {_COUNT_LIMIT}"
    return None


def _times_error(rec: L7Record, now: int) -> str | None:
    """The cross-field bounds of contracts.record (the schema checks each field's own)."""
    if rec.end_time > now + MAX_FUTURE_S:
        return (f"end_time: {rec.end_time} is more than {MAX_FUTURE_S} s after the server's time "
                f"{now}")
    if rec.start_time > rec.end_time:
        return f"start_time: {rec.start_time} is after end_time {rec.end_time}"
    if rec.duration_mean * rec.count > MAX_DURATION_SUM_NS:
        return (f"duration_mean * count: {rec.duration_mean} * {rec.count} is over the maximum "
                f"duration sum {MAX_DURATION_SUM_NS} ns")
    return None


def _columns_ok(cols: ColumnBatch, now: int) -> bool:
    """Every histogram key a bucket index, every integer within its stored width, and the
    cross-field bounds (_times_error), checked per column (C-level max/set/map passes;
    histogram keys once per distinct key)."""
    for name, limit in _INT_LIMITS:
        if max(cols[name], default=0) > limit:
            return False
    if max(cols["end_time"], default=0) > now + MAX_FUTURE_S:
        return False
    if any(map(gt, cols["start_time"], cols["end_time"])):
        return False
    if max(map(mul, cols["duration_mean"], cols["count"]), default=0) > MAX_DURATION_SUM_NS:
        return False
    hists: list[dict[str, int]] = cols[HIST_FIELD]
    if not all(map(_bucket_ok, set(chain.from_iterable(hists)))):
        return False
    return max(chain.from_iterable(map(dict.values, hists)), default=0) <= _COUNT_LIMIT


def _parse_fast(body: bytes, now: int, start: int = 0, end: int | None = None) -> Parsed | None:
    """All lines in one msgspec call straight from the body (no copy of it), checked per column;
    None when any line needs the line-by-line path (too long, not exactly one object, a blank
    line, invalid, out of bounds, a bad bucket, an integer too wide).

    The body must be canonical NDJSON: `{...}` objects, each newline (or CRLF) directly between
    a `}` and a `{`, optional whitespace at the very end. Then every line holds whole values
    (no JSON value has `}`, whitespace, `{` inside it, nor a raw newline in a string), so the
    record count equals the line count exactly when each line holds one object."""
    end = len(body) if end is None else end
    while end > start and body[end - 1] in _WHITESPACE:
        end -= 1
    if start == end:
        return Parsed([], [], 0, to_columns([]))
    if body[start] != _OPEN_BRACE or body[end - 1] != _CLOSE_BRACE:
        return None
    newlines = body.count(b"\n", start, end)
    crlf = body.count(b"}\r\n{", start, end) if body.find(b"\r", start, end) >= 0 else 0
    if body.count(b"}\n{", start, end) + crlf != newlines:
        return None
    if end - start > MAX_LINE_BYTES and _longest_line(body, start, end) > MAX_LINE_BYTES:
        return None
    try:
        recs = _record_decoder.decode_lines(memoryview(body)[start:end])
    except (ValueError, RecursionError):  # msgspec's errors, and UnicodeDecodeError
        return None
    if len(recs) != newlines + 1:
        return None
    cols = to_columns(recs)
    return Parsed(recs, [], 0, cols) if _columns_ok(cols, now) else None


def _longest_line(body: bytes, start: int, end: int) -> int:
    """Length of the longest line of body[start:end] (a CR before the newline counted: conservative)."""
    longest, pos = 0, start
    while True:
        nl = body.find(b"\n", pos, end)
        stop = end if nl < 0 else nl
        longest = max(longest, stop - pos)
        if nl < 0:
            return longest
        pos = nl + 1


def parse_body(body: bytes, now: int) -> Parsed:
    """The records and rejections of one bulk body; `now` (epoch s) bounds end_time."""
    with gc_paused():
        return _parse_range(body, now, 0, len(body), 1)


def _parse_range(body: bytes, now: int, start: int, end: int, first_line: int,
                 budget: int = MAX_REJECTED_LINES) -> Parsed:
    fast = _parse_fast(body, now, start, end)
    return fast if fast is not None else _parse_lines(body, now, start, end, first_line, budget)


def parse_chunks(body: bytes, now: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Parsed]:
    """parse_body of consecutive pieces of about `chunk_bytes` (whole lines; rejections keep
    their line numbers in the whole body), so a caller can store and free each piece's records
    before the next is decoded: a 64 MiB body then never has all its records alive at once.

    After MAX_REJECTED_LINES rejected lines the rest of the body is not decoded (each bad line
    costs microseconds of CPU: 64 MiB of `{}` lines would cost a minute); its lines are counted
    as rejected, with one rejection naming the first of them."""
    pos, line, n = 0, 1, len(body)
    rejected = 0
    while pos < n:
        nl = body.find(b"\n", min(pos + chunk_bytes, n))
        stop = n if nl < 0 else nl + 1
        parsed = _parse_range(body, now, pos, stop, line, MAX_REJECTED_LINES - rejected)
        rejected += parsed.rejected_total
        if parsed.stopped is not None:
            first = line + body.count(b"\n", pos, parsed.stopped)
            rest = body.count(b"\n", parsed.stopped, n) + (not body.endswith(b"\n"))
            parsed.rejected_total += rest
            note = Rejection(first, f"not read: the body already had {MAX_REJECTED_LINES} rejected lines "
                                    f"(this and the {rest - 1} lines after it are counted as rejected)")
            parsed.rejected[len(parsed.rejected) - (len(parsed.rejected) >= MAX_LISTED_REJECTIONS):] = [note]
            yield parsed
            return
        yield parsed
        line += body.count(b"\n", pos, stop)
        pos = stop


def decode_line(line: bytes) -> tuple[L7Record, int]:
    """One record and the number of unknown fields dropped from it (only a record whose
    schema_version is newer than this server's may have any). Raises RecordError."""
    try:
        return decode_record(line), 0
    except RecordError as e:
        if "unknown field" not in str(e):
            raise
        strict = e
    nested = RecordError(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        obj = _raw_object.decode(line)
        version = msgspec.json.decode(obj.get("schema_version", b"0"))
    except RecursionError:
        raise nested from None
    except ValueError:
        raise strict from None
    if not isinstance(version, int) or version <= SCHEMA_VERSION:
        raise strict
    if too_deep(line, MAX_JSON_DEPTH):
        raise nested
    unknown = obj.keys() - _KNOWN
    rec = decode_record(_raw_encoder.encode({k: v for k, v in obj.items() if k in _KNOWN}))
    return rec, len(unknown)


def _parse_lines(body: bytes, now: int, start: int = 0, end: int | None = None,
                 first_line: int = 1, budget: int = MAX_REJECTED_LINES) -> Parsed:
    """Line by line; stops after `budget` rejected lines (Parsed.stopped: where it stopped)."""
    records: list[L7Record] = []
    rejected: list[Rejection] = []
    total = 0
    ignored = 0
    stopped: int | None = None
    pos, stop, i = start, len(body) if end is None else end, first_line - 1
    while pos <= stop:  # body[start:end].split(b"\n") one line at a time (a list of millions
        nl = body.find(b"\n", pos, stop)  # of tiny lines cost 15x the body)
        if nl < 0:
            nl = stop
        raw, pos, i = body[pos:nl], nl + 1, i + 1
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip():
            continue
        error: str | None = None
        if len(line) > MAX_LINE_BYTES:
            error = f"line is {len(line)} bytes, over the {MAX_LINE_BYTES}-byte limit"
        else:
            try:
                rec, n_unknown = decode_line(line)
                for k in rec.duration_hist:  # counts are checked by the schema; keys here
                    if not _bucket_ok(k):
                        raise ValueError(f"bucket {k[:20]!r} is not a bucket index (0..{MAX_BUCKET})")
                error = _width_error(rec) or _times_error(rec, now)
                if error is None:
                    records.append(rec)
                    ignored += n_unknown
            except RecordError as e:
                error = str(e)
            except ValueError as e:  # histogram keys that are not bucket indexes
                error = f"bad duration_hist: {e}"
        if error is not None:
            total += 1
            if len(rejected) < MAX_LISTED_REJECTIONS:
                rejected.append(Rejection(i, error[:500]))
            if total >= budget and pos < stop:
                stopped = pos
                break
    return Parsed(records, rejected, total, to_columns(records), ignored, stopped)


def check_batch_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _BATCH_ID.fullmatch(value):
        raise BadBatchId("X-L7scope-Batch-Id must be 1..200 printable ASCII characters")
    return value


#: Gets each stored piece of a body and its edge counts, after the store accepted the body
#: (e.g. server.otlp_export.OtlpExporter.submit); never for a duplicate batch.
Sink = Callable[[ColumnBatch, EdgeCounts], object]


class Ingestor:
    def __init__(self, store: Store, metrics: Metrics, clock: Callable[[], float] = time.time,
                 sink: Sink | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.sink = sink

    def ingest(self, body: bytes, batch_id: str | None) -> tuple[BulkResult, int]:
        """Store the valid lines of `body`; returns the answer and the number rejected.

        Raises store.base.StoreError when the store fails (nothing was stored: retry)."""
        # GC stays paused until the batch's records are freed again (by reference counting, on
        # return from _ingest), so the pause ends with nothing new for a collection to walk.
        with gc_paused():
            return self._ingest(body, batch_id)

    def _ingest(self, body: bytes, batch_id: str | None) -> tuple[BulkResult, int]:
        self.metrics.inc("ingest_requests")
        now = int(self.clock())
        accepted = rejected_total = ignored = 0
        rejected: list[Rejection] = []
        edges: list[EdgeCounts] = []
        stored: list[ColumnBatch] = []  # only with a sink: the pieces it gets afterwards

        def batches() -> Iterator[ColumnBatch]:
            # Decoded piece by piece while the store inserts them (in one transaction where the
            # engine has them); each piece's records are freed before the next is decoded.
            nonlocal accepted, rejected_total, ignored
            for parsed in parse_chunks(body, now):
                accepted += len(parsed.records)
                parsed.records.clear()  # the columns hold every value
                rejected_total += parsed.rejected_total
                rejected.extend(parsed.rejected[: MAX_LISTED_REJECTIONS - len(rejected)])
                ignored += parsed.fields_ignored
                edges.append(edge_counts(parsed.columns))
                if self.sink is not None:
                    stored.append(parsed.columns)
                yield parsed.columns

        if not self.store.insert_batches(batch_id, batches(), now):
            self.metrics.inc("duplicate_batches")
            return BulkResult(0, [], duplicate=True), 0
        self.metrics.inc("records_accepted", accepted)
        self.metrics.inc("records_rejected", rejected_total)
        if ignored:
            self.metrics.inc("unknown_fields_ignored", ignored)
        for e in edges:
            self.metrics.add_edges(e)
        if self.sink is not None:
            for cols, e in zip(stored, edges, strict=True):
                self.sink(cols, e)
        return BulkResult(accepted, rejected), rejected_total
