"""Node status reports: what a node agent sends the server about its node's parts, so that one
authenticated scrape of the server's `/metrics` covers every node (docs/metrics.md).

In a cluster the collector's and the node agent's status ports bind 127.0.0.1 (their pod has the
host's network, and a counter port on every node's address would be an unauthenticated listener).
Instead, every `REPORT_SECONDS` the node agent POSTs its own `/stats` counters and the collector's
(read over loopback) to `NODE_STATS_PATH` with the credential it ships records with (a writer).
The server keeps the latest report per node for `TTL_SECONDS` and renders it in `/metrics` with
a `node` label (server/node_stats.py).

The body is JSON, `NodeStatsReport`. Only numbers and booleans are carried (text and nested
values of `/stats` are not metrics); a report is bounded (`MAX_BODY_BYTES`, `MAX_KEYS` per part,
key names `KEY_PATTERN`), and `decode` rejects anything else with `msgspec.ValidationError`.
The node name is what the agent says it is: a writer credential can report any node, as it can
ship records for any node (docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec

from l7scope.contracts.status import COLLECTOR, NODE_AGENT

NODE_STATS_PATH: Final = "/api/v1/nodes/stats"
CONTENT_TYPE: Final = "application/json"
REPORT_SECONDS: Final = 15.0
#: a node not heard from for this long disappears from `/metrics` (4 missed reports)
TTL_SECONDS: Final = 4 * REPORT_SECONDS
MAX_BODY_BYTES: Final = 64 * 1024
MAX_KEYS: Final = 200
KEY_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
PARTS: Final = (COLLECTOR, NODE_AGENT)

Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
Value = bool | int | float
Counters = Annotated[dict[Key, Value], msgspec.Meta(max_length=MAX_KEYS)]


class NodeStatsReport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=253,
                                      pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")]
    #: part (PARTS) -> its numeric `/stats` counters; a part that could not be read is absent
    parts: Annotated[dict[str, Counters], msgspec.Meta(max_length=len(PARTS))]


_decoder = msgspec.json.Decoder(NodeStatsReport)
_encoder = msgspec.json.Encoder()
_key = re.compile(KEY_PATTERN)


def numeric(stats: Mapping[str, Any]) -> dict[str, Value]:
    """The counters of a `/stats` object that a report carries: numbers and booleans under a
    valid key, at most MAX_KEYS (sorted by name)."""
    out = {k: v for k, v in sorted(stats.items())
           if isinstance(v, bool | int | float) and _key.match(k)}
    return dict(list(out.items())[:MAX_KEYS])


def encode(report: NodeStatsReport) -> bytes:
    return _encoder.encode(report)


def decode(body: bytes) -> NodeStatsReport:
    """Parse and check a report; raises msgspec.ValidationError / DecodeError (a 400)."""
    if len(body) > MAX_BODY_BYTES:
        raise msgspec.ValidationError(f"report is over {MAX_BODY_BYTES} bytes")
    report = _decoder.decode(body)
    unknown = sorted(set(report.parts) - set(PARTS))
    if unknown:
        raise msgspec.ValidationError(f"unknown part(s) {unknown}: expected some of {list(PARTS)}")
    return report
