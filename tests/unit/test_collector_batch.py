"""Batching rules of the collector (spec section 5): key, merge, unique-key cap, per-tuple counts."""

from __future__ import annotations

import random

from l7scope.collector.batch import INT32_MAX, Batcher
from l7scope.collector.decode import decode_block
from l7scope.contracts import latency
from l7scope.contracts.envoy_log import EnvoyLogLine, encode_line
from l7scope.contracts.policysync_pb2 import DataplaneStats, Statistic
from l7scope.testing.envoy_lines import line as synth_line


def mk(src: str = "10.0.0.1:40000", dst: str = "10.96.0.10:80", **kw: object) -> EnvoyLogLine:
    base: dict[str, object] = dict(
        reporter="destination", type="HTTP/1.1", protocol="HTTP/1.1", duration=10,
        duration_us=10_500, response_code=200, response_flags="-", bytes_sent=100,
        bytes_received=20, user_agent="curl/8", request_path="/a", request_method="GET",
        domain="svc.ns", upstream_service_time="7", upstream_host="10.244.0.5:8080",
        downstream_remote_address=src, downstream_local_address=dst)
    base.update(kw)
    return EnvoyLogLine(**base)  # type: ignore[arg-type]


def by_tuple(msgs: list[DataplaneStats]) -> dict[tuple[str, int, str, int], DataplaneStats]:
    return {(m.src_ip, m.src_port, m.dst_ip, m.dst_port): m for m in msgs}


def http_count(m: DataplaneStats) -> int:
    assert len(m.stats) == 1
    s = m.stats[0]
    assert (s.direction, s.relativity, s.kind, s.action) == (
        Statistic.IN, Statistic.DELTA, Statistic.HTTP_DATA, 0)
    return s.value


def test_same_key_merges_sums_max_count_latency_histogram() -> None:
    b = Batcher(node_name="node-a")
    b.add([mk(duration=10, duration_us=10_500, upstream_service_time="7"),
           mk(duration=30, duration_us=30_100, upstream_service_time="25", bytes_sent=5)])
    res = b.flush()
    assert res.requests == 2 and res.entries == 1 and res.over_cap == 0
    (m,) = res.messages
    assert (m.src_ip, m.src_port, m.dst_ip, m.dst_port) == ("10.0.0.1", 40000, "10.96.0.10", 80)
    assert m.protocol.name == "tcp" and m.reporter_node == "node-a"
    assert http_count(m) == 2
    (hd,) = m.http_data
    assert (hd.count, hd.duration, hd.duration_max, hd.latency) == (2, 40, 30, (10 - 7) + (30 - 25))
    assert (hd.bytes_sent, hd.bytes_received) == (105, 40)
    assert (hd.bytes_sent_total, hd.bytes_received_total) == (105, 40)
    assert (hd.duration_us_sum, hd.duration_us_max) == (40_600, 30_100)
    assert dict(hd.duration_hist) == {latency.bucket_of(10_500): 1, latency.bucket_of(30_100): 1}
    assert (hd.request_method, hd.request_path, hd.response_code, hd.domain, hd.user_agent,
            hd.type) == ("GET", "/a", 200, "svc.ns", "curl/8", "HTTP/1.1")
    assert hd.upstream_host == "10.244.0.5:8080" and hd.response_flags == ""
    assert hd.collector_type == "envoy-access-log" and hd.collector_name == "daemonset"


def test_every_key_field_separates_entries() -> None:
    b = Batcher()
    variants = [dict(user_agent="x"), dict(request_path="/b"), dict(request_method="POST"),
                dict(response_code=404), dict(domain="other"), dict(type="HTTP/2"),
                dict(grpc_status=14), dict(response_flags="UF")]
    b.add([mk()] + [mk(**v) for v in variants])  # type: ignore[arg-type]
    res = b.flush()
    # type is part of the connection tuple, so HTTP/2 is a separate DataplaneStats
    assert len(res.messages) == 2 and res.entries == 9 and res.requests == 9
    entries = [hd for m in res.messages for hd in m.http_data]
    assert {hd.grpc_status for hd in entries} == {"", "14"}
    assert {hd.response_flags for hd in entries} == {"", "UF"}


def test_source_port_is_part_of_the_key() -> None:
    b = Batcher()
    b.add([mk(src="10.0.0.1:40000"), mk(src="10.0.0.1:40001"), mk(src="10.0.0.1:40001")])
    t = by_tuple(b.flush().messages)
    assert http_count(t[("10.0.0.1", 40000, "10.96.0.10", 80)]) == 1
    assert http_count(t[("10.0.0.1", 40001, "10.96.0.10", 80)]) == 2


def test_cap_drops_new_keys_but_counts_every_request_per_tuple() -> None:
    b = Batcher(requests_per_interval=2)
    a, c = "10.0.0.1:1000", "10.0.0.3:3000"
    over = b.add([
        mk(src=a, request_path="/1"),
        mk(src=a, request_path="/2"),   # batch is now full (2 keys)
        mk(src=a, request_path="/3"),   # new key: dropped, counted for tuple a
        mk(src=a, request_path="/1"),   # existing key: merged even though full
        mk(src=c, request_path="/1"),   # new key on another tuple: dropped
        mk(src=c, request_path="/9"),
    ])
    assert over == 3
    res = b.flush()
    assert res.requests == 6 and res.over_cap == 3 and res.entries == 2
    t = by_tuple(res.messages)
    ma = t[("10.0.0.1", 1000, "10.96.0.10", 80)]
    assert http_count(ma) == 4
    assert sorted((hd.request_path, hd.count) for hd in ma.http_data) == [("/1", 2), ("/2", 1)]
    mc = t[("10.0.0.3", 3000, "10.96.0.10", 80)]  # every request over the cap
    assert http_count(mc) == 2
    (hd,) = mc.http_data
    assert (hd.count, hd.type, hd.request_path, hd.response_code) == (0, "HTTP/1.1", "", 0)


def test_zero_and_negative_cap_are_unlimited() -> None:
    for cap in (0, -1):
        b = Batcher(requests_per_interval=cap)
        b.add([mk(request_path=f"/{i}") for i in range(500)])
        res = b.flush()
        assert res.entries == 500 and res.over_cap == 0


def test_flush_resets_and_cap_applies_per_interval() -> None:
    b = Batcher(requests_per_interval=1)
    b.add([mk(request_path="/1"), mk(request_path="/2")])
    assert b.flush().over_cap == 1
    b.add([mk(request_path="/2")])
    res = b.flush()
    assert res.over_cap == 0 and res.messages[0].http_data[0].request_path == "/2"
    assert b.flush().messages == []


def test_nulls_tcp_and_tls_lines() -> None:
    tcp = EnvoyLogLine(reporter="destination", type="tcp", duration=5, bytes_sent=7,
                       bytes_received=3, downstream_remote_address="10.0.0.2:5555",
                       downstream_local_address="10.96.0.11:5432")
    tls = EnvoyLogLine(reporter="destination", type="tls", duration=None, duration_us=None,
                       requested_server_name="shop.example", upstream_service_time="-",
                       downstream_remote_address="10.0.0.2:5556",
                       downstream_local_address="10.96.0.11:443")
    b = Batcher()
    b.add([tcp, tls])
    t = by_tuple(b.flush().messages)
    hd = t[("10.0.0.2", 5555, "10.96.0.11", 5432)].http_data[0]
    assert (hd.type, hd.duration, hd.duration_us_sum, hd.bytes_sent, hd.request_method,
            hd.response_code, hd.latency) == ("tcp", 5, 5000, 7, "", 0, 0)
    hd = t[("10.0.0.2", 5556, "10.96.0.11", 443)].http_data[0]
    assert (hd.type, hd.tls_sni, hd.count, hd.duration) == ("tls", "shop.example", 1, 0)


def test_lines_without_tuple_or_with_other_reporter_are_counted_invalid() -> None:
    b = Batcher()
    b.add([mk(), EnvoyLogLine(), mk(reporter="gateway"), mk(downstream_local_address=None)])
    res = b.flush()
    assert res.requests == 1 and res.invalid == 3


def test_int32_fields_saturate_and_64_bit_totals_do_not() -> None:
    b = Batcher()
    b.add([mk(bytes_sent=2**31 - 10, duration_us=5_000_000_000, duration=1_000_000_000)] * 3)
    hd = b.flush().messages[0].http_data[0]
    assert hd.bytes_sent == INT32_MAX and hd.bytes_sent_total == 3 * (2**31 - 10)
    assert hd.duration == INT32_MAX and hd.duration_us_sum == 15_000_000_000
    assert hd.duration_hist[latency.bucket_of(5_000_000_000)] == 3


def test_random_lines_are_all_accounted_for_under_any_cap() -> None:
    rng = random.Random(7)
    raw = [synth_line(rng, connections=40, paths=3, i=i) for i in range(3000)]
    for cap in (-1, 1, 10, 100, 10_000):
        b = Batcher(requests_per_interval=cap)
        over = 0
        for i in range(0, len(raw), 333):
            over += b.add(raw[i:i + 333])
        res = b.flush()
        assert res.requests == 3000 and res.over_cap == over
        assert sum(http_count(m) for m in res.messages) == 3000
        kept = sum(hd.count for m in res.messages for hd in m.http_data)
        assert kept == 3000 - over
        if cap > 0:
            assert res.entries <= cap
        if cap == -1:
            assert sum(hd.bytes_sent_total for m in res.messages for hd in m.http_data) == sum(
                (ln.bytes_sent or 0) for ln in raw)


def test_decode_block_fast_path_and_bad_lines() -> None:
    good = [encode_line(mk(request_path=f"/{i}")) for i in range(5)]
    lines, bad = decode_block(b"\n".join(good) + b"\n")
    assert len(lines) == 5 and bad == 0
    block = b"\n".join([good[0], b"{not json", good[1], b"", b'{"duration":"x"}', b"[1,2]",
                        good[2] + b"," + good[3], good[4]]) + b"\n"
    lines, bad = decode_block(block)
    assert [ln.request_path for ln in lines] == ["/0", "/1", "/4"] and bad == 4
    assert decode_block(b"") == ([], 0)
