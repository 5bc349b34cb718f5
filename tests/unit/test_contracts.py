"""Contracts: Envoy log decoding, the L7 record schema, the latency histogram."""

from __future__ import annotations

import pytest

from l7scope.contracts import envoy_log, latency, record


def test_decode_real_envoy_line() -> None:
    line = (
        b'{"authority":"x","bytes_received":7,"bytes_sent":48,"downstream_local_address":'
        b'"10.96.0.10:80","downstream_remote_address":"10.77.1.2:53102","duration":47,'
        b'"request_method":"POST","request_path":"/missing/item","response_code":404,'
        b'"response_flags":"-","upstream_service_time":"0","user_agent":null,"type":"HTTP/1.1"}'
    )
    e = envoy_log.decode_line(line)
    assert (e.request_method, e.request_path, e.response_code) == ("POST", "/missing/item", 404)
    assert (e.bytes_received, e.bytes_sent, e.duration) == (7, 48, 47)
    assert e.user_agent is None and e.type == "HTTP/1.1"
    assert envoy_log.split_address(e.downstream_local_address) == ("10.96.0.10", 80)


def test_decode_lines_counts_bad_lines_and_keeps_good_ones() -> None:
    good = b'{"request_method":"GET","response_code":200}'
    lines = [good, b"{not json", b"", good, b"[1,2]", b"{},{}", b'{"response_code":"x"}']
    decoded, bad = envoy_log.decode_lines(lines)
    assert len(decoded) == 2 and bad == 4
    assert envoy_log.decode_lines([good, good]) == ([envoy_log.decode_line(good)] * 2, 0)


def test_decode_line_error() -> None:
    with pytest.raises(envoy_log.DecodeError):
        envoy_log.decode_line(b"\xff\xfe")


def test_json_format_has_every_key() -> None:
    fmt = envoy_log.json_format("tcp")
    assert set(fmt) == set(envoy_log.KEYS) and fmt["type"] == "tcp"
    assert set(fmt) <= set(envoy_log.EnvoyLogLine.__struct_fields__)


@pytest.mark.parametrize("addr,expected", [
    ("10.0.0.1:8080", ("10.0.0.1", 8080)), ("[::1]:80", ("::1", 80)),
    (None, ("", 0)), ("garbage", ("garbage", 0)), ("1.2.3.4:x", ("1.2.3.4", 0)),
])
def test_split_address(addr: str | None, expected: tuple[str, int]) -> None:
    assert envoy_log.split_address(addr) == expected


def test_histogram_buckets_are_contiguous_and_tight() -> None:
    prev_hi = 0
    for idx in range(0, 400):
        lo, hi = latency.bucket_bounds(idx)
        assert lo == prev_hi, idx
        assert latency.bucket_of(lo) == idx and latency.bucket_of(hi - 1) == idx
        assert (hi - lo) * 8 <= max(lo, 8)
        prev_hi = hi


def test_histogram_quantiles_and_merge() -> None:
    a: latency.Histogram = {}
    for us in range(1, 1001):
        latency.add(a, us)
    p50 = latency.quantile(a, 0.5)
    p99 = latency.quantile(a, 0.99)
    assert p50 is not None and abs(p50 - 500) / 500 < 0.07
    assert p99 is not None and abs(p99 - 990) / 990 < 0.07
    b = latency.from_wire(latency.to_wire(a))
    assert b == a
    m = latency.merged([a, b])
    assert sum(m.values()) == 2000 and latency.quantile(m, 0.5) == p50
    assert latency.quantile({}, 0.5) is None
    with pytest.raises(ValueError):
        latency.from_wire({"-1": 3})


def test_record_roundtrip_and_rejections() -> None:
    r = record.L7Record(start_time=1, end_time=2, count=3, url="a/b", duration_hist={"40": 3})
    assert record.decode_record(record.encode_record(r)) == r
    assert record.encode_records([r, r]).count(b"\n") == 2
    with pytest.raises(record.RecordError, match="bogus"):
        record.decode_record(b'{"start_time":1,"end_time":2,"bogus":1}')
    with pytest.raises(record.RecordError, match="count"):
        record.decode_record(b'{"start_time":1,"end_time":2,"count":-1}')
    with pytest.raises(record.RecordError, match="end_time"):
        record.decode_record(b'{"start_time":1}')
    assert "schema_version" in record.FIELDS and record.FIELDS[0] == "start_time"
