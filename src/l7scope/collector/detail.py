"""Which decoded lines are kept whole as request detail (contracts/detail.py), per interval.

`Picker.pick(lines)` runs once per decoded block, after the batcher has counted the lines. For
the common case (an HTTP answer below the error floor, no response flag, gRPC OK, below the
slow threshold) it reads five attributes and, when sampling is on, takes one CRC-32 of the
request id: no object is built. Only a kept line becomes a `DetailRecord` (its `detail` object
decoded then), held per connection tuple until `take()` at the end of the interval. At most
`max_per_interval` are held; the rest is counted in `dropped`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

import msgspec

from l7scope.contracts import detail as dc
from l7scope.contracts.envoy_log import EnvoyLogLine

_NO_FLAGS: Final = (None, "", "-")
_GRPC_OK: Final = (None, 0, "0", "", "-")
_raw_decoder: Final = msgspec.json.Decoder(dict[str, str | None])

TupleKey = tuple[object, ...]  # (remote address, local address, type), as batch.py


def reason_of(ln: EnvoyLogLine, error_floor: int, slow_us: int, one_in: int) -> str | None:
    """The detail reason of one line (None: not kept). Pure."""
    code = ln.response_code or 0
    if code >= error_floor or ln.response_flags not in _NO_FLAGS or ln.grpc_status not in _GRPC_OK:
        return dc.REASON_ERROR
    us = ln.duration_us if ln.duration_us is not None else (ln.duration or 0) * 1000
    if us >= slow_us:
        return dc.REASON_SLOW
    return dc.REASON_SAMPLED if one_in and dc.sampled(ln.request_id, one_in) else None


def from_line(ln: EnvoyLogLine, reason: str, sample_rate: int) -> dc.DetailRecord:
    """The request part of a detail record (the node agent fills the key and the interval)."""
    det: dict[str, str | None] = {}
    if ln.detail:  # an empty Raw: the line has no detail object
        try:
            det = _raw_decoder.decode(ln.detail)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            det = {}
    trace_id, span_id, fmt = dc.parse_trace(det)
    grpc = ln.grpc_status
    return dc.DetailRecord(
        time=(ln.start_time or "")[:64], reason=reason, sample_rate=sample_rate,
        method=(ln.request_method or "")[:256],
        path=(ln.request_path or "").split("?", 1)[0][:dc.MAX_PATH],
        domain=(ln.domain or "")[:256],
        response_code=str(ln.response_code) if ln.response_code else "",
        response_flags="" if ln.response_flags in _NO_FLAGS else str(ln.response_flags)[:256],
        grpc_status="" if grpc is None or grpc == "-" else str(grpc)[:256],
        protocol=(ln.protocol or "")[:256], type=(ln.type or "")[:256],
        user_agent=(ln.user_agent or "")[:4096], upstream_host=(ln.upstream_host or "")[:256],
        duration_us=max(ln.duration_us if ln.duration_us is not None else (ln.duration or 0) * 1000, 0),
        bytes_in=max(ln.bytes_received or 0, 0), bytes_out=max(ln.bytes_sent or 0, 0),
        request_id=(ln.request_id or "")[:dc.MAX_ID],
        trace_id=trace_id, span_id=span_id, trace_format=fmt,
        request_headers=dc.headers_of(det, dc.REQ_PREFIX),
        response_headers=dc.headers_of(det, dc.RESP_PREFIX),
    )


class Picker:
    """Holds one interval's kept lines as encoded DetailRecords, per connection tuple."""

    def __init__(self, settings: dc.DetailSettings) -> None:
        self.settings = settings
        self.error_floor = 400 if settings.include_4xx else 500
        self.slow_us = settings.slow_threshold_ms * 1000
        self.one_in = settings.sample_one_in
        self.cap = settings.max_per_interval
        self._held: dict[TupleKey, list[bytes]] = {}
        self._n = 0
        self.picked = 0  # since start: records held
        self.dropped = 0  # since start: kept lines over the cap

    def pick(self, lines: Sequence[EnvoyLogLine]) -> None:
        floor, slow, one_in = self.error_floor, self.slow_us, self.one_in
        no_flags, grpc_ok, crc32 = _NO_FLAGS, _GRPC_OK, zlib.crc32
        for ln in lines:
            # the common case inline (a plain answer, fast, not sampled): no call, no object
            code, us = ln.response_code, ln.duration_us
            if (code is not None and code < floor and us is not None and us < slow
                    and ln.response_flags in no_flags and ln.grpc_status in grpc_ok):
                rid = ln.request_id
                if not one_in or not rid or (one_in > 1 and crc32(rid.encode("utf-8", "replace")) % one_in):
                    continue
            if not ln.request_method:  # tcp, tls: no request
                continue
            reason = reason_of(ln, floor, slow, one_in)
            if reason is None:
                continue
            if self._n >= self.cap:
                self.dropped += 1
                continue
            rate = one_in if reason == dc.REASON_SAMPLED else 1
            t = (ln.downstream_remote_address, ln.downstream_local_address, ln.type)
            self._held.setdefault(t, []).append(dc.encode_record(from_line(ln, reason, rate)))
            self._n += 1
            self.picked += 1

    def take(self) -> dict[TupleKey, list[bytes]]:
        """The interval's records by tuple; the next interval starts empty."""
        held, self._held, self._n = self._held, {}, 0
        return held
