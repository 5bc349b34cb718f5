"""Bulk ingest (contracts.bulk): NDJSON body -> validated records + line rejections -> store.

`parse_body()` is pure: it checks each line on its own (size, UTF-8, JSON, the record schema,
histogram keys) so one bad line never costs the others. `Ingestor` adds the batch-id
de-duplication (remembered by the store, so across restarts) and the counters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec

from l7scope.contracts.bulk import MAX_LINE_BYTES, BulkResult, Rejection
from l7scope.contracts.record import L7Record, RecordError, decode_record
from l7scope.server.columns import to_columns
from l7scope.server.metrics import Metrics
from l7scope.server.store.base import Store

MAX_LISTED_REJECTIONS: Final = 1000
MAX_BUCKET: Final = 65535  # stored as UInt16
_BATCH_ID: Final = re.compile(r"[\x21-\x7e]{1,200}")
_array_decoder: Final = msgspec.json.Decoder(list[L7Record])


class BadBatchId(ValueError):
    pass


@dataclass
class Parsed:
    records: list[L7Record]
    rejected: list[Rejection]
    rejected_total: int


def _bucket_ok(k: str) -> bool:
    return k.isascii() and k.isdigit() and len(k) <= 5 and int(k) <= MAX_BUCKET


def _parse_fast(body: bytes) -> list[L7Record] | None:
    """All lines in one msgspec call (the lines joined into one JSON array); None when any
    line needs the line-by-line path (too long, not one object, invalid, a bad bucket)."""
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in body.split(b"\n")]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return []
    for ln in lines:
        # One `{...}` object per line, so joined lines cannot pair up into other records
        # (and the count below catches a line holding two).
        if len(ln) > MAX_LINE_BYTES or not (ln.lstrip()[:1] == b"{" and ln.rstrip()[-1:] == b"}"):
            return None
    try:
        recs = _array_decoder.decode(b"[" + b",".join(lines) + b"]")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(recs) != len(lines):
        return None
    for rec in recs:
        if rec.duration_hist and not all(map(_bucket_ok, rec.duration_hist)):
            return None
    return recs


def parse_body(body: bytes) -> Parsed:
    fast = _parse_fast(body)
    if fast is not None:
        return Parsed(fast, [], 0)
    records: list[L7Record] = []
    rejected: list[Rejection] = []
    total = 0
    for i, raw in enumerate(body.split(b"\n"), start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip():
            continue
        error: str | None = None
        if len(line) > MAX_LINE_BYTES:
            error = f"line is {len(line)} bytes, over the {MAX_LINE_BYTES}-byte limit"
        else:
            try:
                rec = decode_record(line)
                for k in rec.duration_hist:  # counts are checked by the schema; keys here
                    if not _bucket_ok(k):
                        raise ValueError(f"bucket {k[:20]!r} is not a bucket index (0..{MAX_BUCKET})")
                records.append(rec)
            except RecordError as e:
                error = str(e)
            except ValueError as e:  # histogram keys that are not bucket indexes
                error = f"bad duration_hist: {e}"
        if error is not None:
            total += 1
            if len(rejected) < MAX_LISTED_REJECTIONS:
                rejected.append(Rejection(i, error[:500]))
    return Parsed(records, rejected, total)


def check_batch_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _BATCH_ID.fullmatch(value):
        raise BadBatchId("X-L7scope-Batch-Id must be 1..200 printable ASCII characters")
    return value


class Ingestor:
    def __init__(self, store: Store, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock

    def ingest(self, body: bytes, batch_id: str | None) -> tuple[BulkResult, int]:
        """Store the valid lines of `body`; returns the answer and the number rejected.

        Raises store.base.StoreError when the store fails (nothing was stored: retry)."""
        self.metrics.inc("ingest_requests")
        parsed = parse_body(body)
        cols = to_columns(parsed.records)
        if batch_id is not None:
            if not self.store.insert_once(batch_id, cols, int(self.clock())):
                self.metrics.inc("duplicate_batches")
                return BulkResult(0, [], duplicate=True), 0
        else:
            self.store.insert(cols)
        self.metrics.inc("records_accepted", len(parsed.records))
        self.metrics.inc("records_rejected", parsed.rejected_total)
        self.metrics.observe_records(parsed.records)
        return BulkResult(len(parsed.records), parsed.rejected), parsed.rejected_total
