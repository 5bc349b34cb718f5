"""The aggregated L7 record: what the node agent writes to l7.log and ships, and the server stores.

Field names and units are Calico's L7 log schema (spec section 10): times in epoch seconds,
durations in nanoseconds, `"-"` for a field excluded by aggregation. Fields after the marked line
are l7scope extensions. The server validates incoming records with `decode_record()`; the node
agent builds them with `L7Record(...)` and serialises with `encode_records()`.

Changing this shape means bumping SCHEMA_VERSION. A field is never given a new meaning.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

SCHEMA_VERSION: Final = 1

#: `type` of the record that carries the number of requests dropped by the per-node limit.
TYPE_UNLOGGED: Final = "unlogged"
#: Value of a field excluded by aggregation or not applicable.
EXCLUDED: Final = "-"

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
Long = Annotated[str, msgspec.Meta(max_length=4096)]


class L7Record(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One aggregated L7 log record."""

    # --- Calico's fields -------------------------------------------------------------
    start_time: NonNeg  # start of the aggregation interval, epoch seconds
    end_time: NonNeg  # end of the interval, epoch seconds; the time field of queries
    duration_mean: NonNeg = 0  # ns
    duration_max: NonNeg = 0  # ns
    latency: NonNeg = 0  # sum of (duration - upstream service time), ns
    bytes_in: NonNeg = 0  # request bytes received from the client
    bytes_out: NonNeg = 0  # response bytes sent to the client
    count: NonNeg = 0  # requests merged into this record (unlogged: requests dropped)
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
    duration_p50: NonNeg = 0  # ns, from duration_hist
    duration_p90: NonNeg = 0
    duration_p99: NonNeg = 0
    duration_hist: dict[str, NonNeg] = msgspec.field(default_factory=dict)  # contracts.latency
    requests_seen: NonNeg = 0  # requests the node saw in this record's flush interval
    requests_logged: NonNeg = 0  # of those, requests written as detailed records


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


def encode_record(rec: L7Record) -> bytes:
    return _encoder.encode(rec)


def encode_records(recs: list[L7Record]) -> bytes:
    """NDJSON: one record per line, each line ending in a newline."""
    return b"".join(_encoder.encode(r) + b"\n" for r in recs)


def to_dict(rec: L7Record) -> dict[str, object]:
    return msgspec.structs.asdict(rec)
