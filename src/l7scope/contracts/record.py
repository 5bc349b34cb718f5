"""The aggregated L7 record: what the node agent writes to l7.log and ships, and the server stores.

Field names and units are Calico's L7 log schema (spec section 10): times in epoch seconds,
durations in nanoseconds, `"-"` for a field excluded by aggregation. Fields after the marked line
are l7scope extensions. The server validates incoming records with `decode_record()`; the node
agent builds them with `L7Record(...)` and serialises with `encode_records()`.

Changing this shape means bumping SCHEMA_VERSION. A field is never given a new meaning. A
server reading a record of a NEWER schema version ignores the fields it does not know (and
counts them) instead of rejecting the record, so node agents can be upgraded before the server.

Bounds (checked when the server decodes a record; a record outside them is rejected on its own
line, see docs/api.md): they keep every sum a query computes inside 64 bits for any realistic
number of records in one query window:
- `count`, `requests_seen`, `requests_logged` and every `duration_hist` count <= MAX_COUNT
  (2^32 - 1): the sum of `count` over 2^32 records (50,000 records/s for a day) fits in 64 bits;
- `bytes_in`, `bytes_out` <= MAX_BYTES (2^40 - 1, 1 TiB per record): the sums fit in 64 bits for
  2^24 records at the maximum, and for any number of realistic ones;
- durations (`duration_mean`, `duration_max`, `duration_p50/p90/p99`) <= MAX_DURATION_NS
  (2^53 - 1 ns, 104 days); `latency` and `duration_mean * count` (the duration sum the
  count-weighted mean is computed from) <= MAX_DURATION_SUM_NS (2^63 - 1 ns);
- `start_time <= end_time <= now + MAX_FUTURE_S` (one hour of clock skew): a record from the
  far future would never be retired by retention.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

SCHEMA_VERSION: Final = 1

#: `type` of the record that carries the number of requests dropped by the per-node limit.
TYPE_UNLOGGED: Final = "unlogged"
#: Value of a field excluded by aggregation or not applicable.
EXCLUDED: Final = "-"

MAX_COUNT: Final = (1 << 32) - 1
MAX_BYTES: Final = (1 << 40) - 1
MAX_DURATION_NS: Final = (1 << 53) - 1
MAX_DURATION_SUM_NS: Final = (1 << 63) - 1
MAX_FUTURE_S: Final = 3600
MAX_TIME: Final = (1 << 32) - 1  # epoch seconds (stored as 32 bits: 2106)

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
Time = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=MAX_BYTES)]
Duration = Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_NS)]
DurationSum = Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_SUM_NS)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
Long = Annotated[str, msgspec.Meta(max_length=4096)]


class L7Record(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One aggregated L7 log record."""

    # --- Calico's fields -------------------------------------------------------------
    start_time: Time  # start of the aggregation interval, epoch seconds
    end_time: Time  # end of the interval, epoch seconds; the time field of queries
    duration_mean: Duration = 0  # ns
    duration_max: Duration = 0  # ns
    latency: DurationSum = 0  # sum of (duration - upstream service time), ns
    bytes_in: Bytes = 0  # request bytes received from the client
    bytes_out: Bytes = 0  # response bytes sent to the client
    count: Count = 0  # requests merged into this record (unlogged: requests dropped)
    src_name_aggr: Short = EXCLUDED
    src_namespace: Short = EXCLUDED
    src_type: Short = EXCLUDED  # wep | hep | ns | net | -
    source_port_num: Port = 0
    dest_name_aggr: Short = EXCLUDED
    dest_namespace: Short = EXCLUDED
    dest_type: Short = EXCLUDED
    dest_port_num: Port = 0
    dest_service_name: Short = ""
    dest_service_namespace: Short = ""
    dest_service_port_name: Short = ""
    dest_service_port: Port = 0
    url: Long = ""
    response_code: Short = ""  # HTTP status as text; "" for tcp/tls
    method: Short = ""
    user_agent: Long = EXCLUDED
    type: Short = EXCLUDED  # tcp | tls | HTTP/1.1 | HTTP/2 | http | unlogged | "" (overflow) | -
    host: Short = ""  # node that collected the record

    # --- l7scope extensions ------------------------------------------------------------
    schema_version: NonNeg = SCHEMA_VERSION
    collector_type: Short = "envoy-access-log"
    collector_name: Short = "daemonset"
    protocol: Short = ""  # Envoy %PROTOCOL% of the requests (HTTP/1.1, HTTP/2), "" for tcp/tls
    tls_sni: Short = ""
    grpc_status: Short = ""
    duration_p50: Duration = 0  # ns, from duration_hist
    duration_p90: Duration = 0
    duration_p99: Duration = 0
    duration_hist: dict[str, Count] = msgspec.field(default_factory=dict)  # contracts.latency
    requests_seen: Count = 0  # requests the node saw in this record's flush interval
    requests_logged: Count = 0  # of those, requests written as detailed records


#: Every field name, in schema order (the server's column list).
FIELDS: Final[tuple[str, ...]] = L7Record.__struct_fields__

_decoder: Final = msgspec.json.Decoder(L7Record)
_encoder: Final = msgspec.json.Encoder()


class RecordError(ValueError):
    """A record does not match the schema; the message names the field."""


def decode_record(data: bytes | str) -> L7Record:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise RecordError(str(e)) from e
    except UnicodeDecodeError as e:  # msgspec raises it for overlong forms and UTF-8-coded surrogates
        raise RecordError(f"invalid UTF-8 in a string: {e.reason}") from e


def encode_record(rec: L7Record) -> bytes:
    return _encoder.encode(rec)


def encode_records(recs: list[L7Record]) -> bytes:
    """NDJSON: one record per line, each line ending in a newline (msgspec's `encode_lines`:
    one call, about 2x faster than joining one `encode` per record)."""
    return _encoder.encode_lines(recs)


def to_dict(rec: L7Record) -> dict[str, object]:
    return msgspec.structs.asdict(rec)
