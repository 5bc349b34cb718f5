"""The node agent -> server shipping contract: `POST /api/v1/l7/logs/bulk`.

Body: NDJSON, one `contracts.record.L7Record` per line (UTF-8). The request carries a batch
identifier in the BATCH_ID_HEADER header; the server remembers identifiers it has stored and
answers a repeated batch with `duplicate: true` without storing it again, so a shipper may retry
any batch until it gets a 2xx answer: nothing lost, nothing counted twice.

Answer (JSON, status 200 when the body was read, even if some lines were rejected):
    {"accepted": int, "rejected": [{"line": int (1-based), "error": str}], "duplicate": bool,
     "rejected_total": int}
`rejected` lists the first rejected lines (the server caps the list); `rejected_total` counts
them all (an older server without it: len(rejected)).
Status 400 when the body itself is unusable (e.g. over MAX_BODY_BYTES); 5xx means retry.
"""

from __future__ import annotations

from typing import Final

import msgspec

BULK_PATH: Final = "/api/v1/l7/logs/bulk"
BATCH_ID_HEADER: Final = "X-L7scope-Batch-Id"
CONTENT_TYPE: Final = "application/x-ndjson"
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
MAX_LINE_BYTES: Final = 64 * 1024


class Rejection(msgspec.Struct):
    line: int
    error: str


class BulkResult(msgspec.Struct):
    accepted: int
    rejected: list[Rejection]
    duplicate: bool = False
    rejected_total: int | None = None

    def rejected_count(self) -> int:
        """All rejected lines (`rejected_total`, else the listed ones)."""
        return len(self.rejected) if self.rejected_total is None else self.rejected_total
