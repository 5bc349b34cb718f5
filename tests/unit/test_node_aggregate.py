"""Aggregation (spec 7.2, Felix table 8): every setting value, URL trimming, per-node limit with
the `unlogged` record, unit conversion to ns, histogram percentiles, requests seen/logged, and
Report ingestion (overflow entries, exact counts)."""

from __future__ import annotations

from typing import Any

import pytest

from l7scope.contracts import latency
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts.nodeconfig import AggregationSettings
from l7scope.contracts.record import L7Record, decode_record, encode_record
from l7scope.contracts.routes import RouteSettings
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator, Update, limit_url, trim_path, url_of
from l7scope.node.enrich import Endpoint, ServiceRef
from l7scope.node.metadata import MetadataCache
from l7scope.testing.node_inputs import http_data, report, shop

SRC = Endpoint("wep", "shop", "frontend-*")
DST = Endpoint("wep", "shop", "cart-*")
SVC = ServiceRef("cart", "shop", "http", 80)
RAW = RouteSettings(enabled=False)


def upd(**kw: Any) -> Update:
    base: dict[str, Any] = dict(src=SRC, src_port=40000, dst=DST, dst_port=8080, service=SVC,
                                domain="cart.shop", path="/api/items/1?x=1", method="GET",
                                response_code=200, user_agent="curl/8", type="HTTP/1.1",
                                protocol="HTTP/1.1", count=1, duration_sum_ns=2_000_000,
                                duration_max_ns=2_000_000, bytes_in=10, bytes_out=100)
    base.update(kw)
    return Update(**base)


def run(updates: list[Update], **settings: Any) -> list[L7Record]:
    settings.setdefault("routes", RAW)  # Calico's URL settings alone; templates: test_node_routes.py
    agg = Aggregator(AggregationSettings(**settings), "node-a", 100.0)
    for u in updates:
        agg.add(u)
    return agg.flush(105.9)


def one(u: Update, **settings: Any) -> L7Record:
    recs = run([u], **settings)
    assert len(recs) == 1
    return recs[0]


# ---- URL trimming ---------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "mode", "n", "expected"), [
    ("/a/b/c/d/e/f/g?q=1", "IncludeL7FullURL", 5, "/a/b/c/d/e"),
    ("/a/b/c?q=1", "IncludeL7FullURL", 5, "/a/b/c"),
    ("/a/b/c/d/", "IncludeL7FullURL", 5, "/a/b/c/d/"),
    ("/a/b/c/d/e/", "IncludeL7FullURL", 5, "/a/b/c/d/e"),
    ("/a/b/c/d/e/f/", "IncludeL7FullURL", 5, "/a/b/c/d/e"),
    ("/a/b/c", "IncludeL7FullURL", 1, "/a"),
    ("/a/b/c", "IncludeL7FullURL", 0, "/"),
    ("/a/b/c/d/e/f/g", "IncludeL7FullURL", -1, "/a/b/c/d/e/f/g"),
    ("/a/b/c/d/e/f/g?x", "TrimURLQuery", 2, "/a/b/c/d/e/f/g"),  # no segment limit
    ("/a?x=1&y=2", "TrimURLQuery", 5, "/a"),
    ("/a/b?x", "TrimURLQueryAndPath", 5, "-"),
    ("/a/b?x", "ExcludeL7URL", 5, "-"),
    ("", "IncludeL7FullURL", 5, ""),
])
def test_trim_path(path: str, mode: str, n: int, expected: str) -> None:
    assert trim_path(path, mode, n) == expected


@pytest.mark.parametrize(("domain", "path", "limit", "expected"), [
    ("cart", "/abc", 250, ("cart", "/abc")),
    ("cart", "/abcdef", 8, ("cart", "/abc")),
    ("cart", "/abc", 8, ("cart", "/abc")),
    ("averylongdomain", "/x", 5, ("avery", "-")),
    ("abcde", "/x", 5, ("abcde", "")),
])
def test_limit_url(domain: str, path: str, limit: int, expected: tuple[str, str]) -> None:
    assert limit_url(domain, path, limit) == expected


def test_url_of() -> None:
    assert url_of("cart", "/a") == "cart/a"
    assert url_of("cart", "-") == "cart"
    assert url_of("-", "-") == ""


@pytest.mark.parametrize(("mode", "url"), [
    ("IncludeL7FullURL", "cart.shop/api/items/1"),
    ("TrimURLQuery", "cart.shop/api/items/1"),
    ("TrimURLQueryAndPath", "cart.shop"),
    ("ExcludeL7URL", ""),
])
def test_trim_url_setting(mode: str, url: str) -> None:
    assert one(upd(), trim_url=mode).url == url


def test_num_url_path_and_char_limit_settings() -> None:
    u = upd(path="/1/2/3/4/5/6/7")
    assert one(u).url == "cart.shop/1/2/3/4/5"
    assert one(u, num_url_path=2).url == "cart.shop/1/2"
    assert one(u, num_url_path=-1).url == "cart.shop/1/2/3/4/5/6/7"
    assert one(u, url_char_limit=12).url == "cart.shop/1/"
    assert one(u, url_char_limit=4).url == "cart"
    long_path = "/" + "x" * 10_000
    assert len(one(upd(path=long_path), trim_url="TrimURLQuery", url_char_limit=100_000).url) \
        == 4096  # schema limit


# ---- the other settings, every value ----------------------------------------------------------
def test_http_header_info() -> None:
    r = one(upd())
    assert (r.user_agent, r.type) == ("-", "-")  # default Exclude
    r = one(upd(), http_header_info="IncludeL7HTTPHeaderInfo")
    assert (r.user_agent, r.type) == ("curl/8", "HTTP/1.1")
    assert r.protocol == "HTTP/1.1"


def test_http_method() -> None:
    assert one(upd()).method == "GET"
    assert one(upd(), http_method="ExcludeL7HTTPMethod").method == "-"


def test_service_info() -> None:
    r = one(upd())
    assert (r.dest_service_name, r.dest_service_namespace, r.dest_service_port_name,
            r.dest_service_port) == ("cart", "shop", "http", 80)
    r = one(upd(), service_info="ExcludeL7ServiceInfo")
    assert (r.dest_service_name, r.dest_service_namespace, r.dest_service_port_name,
            r.dest_service_port) == ("-", "-", "-", 0)


def test_destination_info() -> None:
    r = one(upd())
    assert (r.dest_name_aggr, r.dest_namespace, r.dest_type, r.dest_port_num) == \
        ("cart-*", "shop", "wep", 8080)
    r = one(upd(), destination_info="ExcludeL7DestinationInfo")
    assert (r.dest_name_aggr, r.dest_namespace, r.dest_type, r.dest_port_num) == ("-", "-", "-", 0)


def test_source_info() -> None:
    r = one(upd())  # default NoPort
    assert (r.src_name_aggr, r.src_namespace, r.src_type, r.source_port_num) == \
        ("frontend-*", "shop", "wep", 0)
    r = one(upd(), source_info="IncludeL7SourceInfo")
    assert r.source_port_num == 40000 and r.src_name_aggr == "frontend-*"
    r = one(upd(), source_info="ExcludeL7SourceInfo")
    assert (r.src_name_aggr, r.src_namespace, r.src_type, r.source_port_num) == ("-", "-", "-", 0)


def test_response_code() -> None:
    assert one(upd()).response_code == "200"
    assert one(upd(response_code=0, type="tcp")).response_code == ""
    assert one(upd(), response_code="ExcludeL7ResponseCode").response_code == "-"


def test_settings_change_what_merges() -> None:
    a = upd(src_port=1, path="/a?x=1", response_code=200)
    b = upd(src_port=2, path="/a?x=2", response_code=500)
    assert len(run([a, b])) == 2  # codes differ
    recs = run([a, b], response_code="ExcludeL7ResponseCode")
    assert len(recs) == 1 and recs[0].count == 2  # ports dropped (NoPort), query dropped
    assert len(run([a, b], response_code="ExcludeL7ResponseCode",
                   source_info="IncludeL7SourceInfo")) == 2


# ---- numbers ---------------------------------------------------------------------------------
def test_merge_units_and_percentiles() -> None:
    h1: dict[int, int] = {}
    latency.add(h1, 1000, 3)  # 1 ms
    h2: dict[int, int] = {}
    latency.add(h2, 100_000, 1)  # 100 ms
    recs = run([
        upd(count=3, duration_sum_ns=3_000_000, duration_max_ns=1_000_000, latency_sum_ns=300_000,
            bytes_in=30, bytes_out=300, hist=h1),
        upd(count=1, duration_sum_ns=100_000_000, duration_max_ns=100_000_000, hist=h2,
            bytes_in=5, bytes_out=7),
    ])
    (r,) = recs
    assert r.count == 4
    assert r.duration_mean == 103_000_000 // 4
    assert r.duration_max == 100_000_000
    assert r.latency == 300_000
    assert (r.bytes_in, r.bytes_out) == (35, 307)
    assert abs(r.duration_p50 - 1_000_000) <= 62_500
    assert abs(r.duration_p99 - 100_000_000) <= 6_250_000
    assert sum(r.duration_hist.values()) == 4
    assert (r.start_time, r.end_time, r.host) == (100, 105, "node-a")
    assert decode_record(encode_record(r)) == r  # valid against the contract


def test_flush_resets_and_times() -> None:
    agg = Aggregator(AggregationSettings(), "n", 10.0)
    agg.add(upd())
    (r,) = agg.flush(11.0)
    assert (r.start_time, r.end_time) == (10, 11)
    assert agg.flush(12.0) == []
    agg.add(upd())
    (r,) = agg.flush(13.0)
    assert (r.start_time, r.end_time) == (12, 13)


# ---- per-node limit --------------------------------------------------------------------------
def test_per_node_limit_unlogged_record_has_exact_count() -> None:
    ups = [upd(path=f"/p{i}", count=i + 1) for i in range(10)]  # 10 keys, 55 requests
    recs = run(ups, per_node_limit=4)
    detailed = [r for r in recs if r.type != "unlogged"]
    (unlogged,) = [r for r in recs if r.type == "unlogged"]
    assert len(detailed) == 4
    assert sum(r.count for r in detailed) == 1 + 2 + 3 + 4
    assert unlogged.count == 55 - 10  # exactly the requests not logged
    assert (unlogged.start_time, unlogged.end_time, unlogged.host) == (100, 105, "node-a")
    for r in recs:
        assert (r.requests_seen, r.requests_logged) == (55, 10)


def test_per_node_limit_existing_keys_still_merge() -> None:
    ups = [upd(path="/a"), upd(path="/b"), upd(path="/c"), upd(path="/a", count=5)]
    recs = run(ups, per_node_limit=2)
    assert {(r.url, r.count) for r in recs} == {("cart.shop/a", 6), ("cart.shop/b", 1),
                                                 ("", 1)}
    assert [r.type for r in recs].count("unlogged") == 1


def test_per_node_limit_zero_is_unlimited() -> None:
    recs = run([upd(path=f"/p{i}") for i in range(3000)], per_node_limit=0)
    assert len(recs) == 3000 and all(r.type != "unlogged" for r in recs)


def test_overflow_entries_fit_within_limit_or_are_counted() -> None:
    ups = [upd(path="/a"), upd(path="/b"),
           upd(path="", method="", response_code=0, count=7, overflow=True, src_port=1),
           upd(path="", method="", response_code=0, count=9, overflow=True,
               src=Endpoint("wep", "x", "y-*"))]
    recs = run(ups, per_node_limit=3)
    overflow = [r for r in recs if r.method == "" and r.type != "unlogged"]
    (unlogged,) = [r for r in recs if r.type == "unlogged"]
    assert len(overflow) == 1 and overflow[0].count == 7
    assert unlogged.count == 9
    assert sum(r.count for r in recs) == 2 + 7 + 9
    assert recs[0].requests_logged == 2 and recs[0].requests_seen == 18


# ---- Report ingestion ------------------------------------------------------------------------
@pytest.fixture
def cache() -> MetadataCache:
    c = MetadataCache()
    c.replace_all(shop())
    return c


def test_ingest_prefers_microseconds(cache: MetadataCache) -> None:
    hd = http_data(count=2, duration_ms=3, duration_max_ms=2, duration_us_sum=3400,
                   duration_us_max=2100, latency=1, bytes_sent=9, bytes_received=4)
    (u,) = ingest.updates(report([hd]), cache)
    assert (u.duration_sum_ns, u.duration_max_ns) == (3_400_000, 2_100_000)
    assert u.latency_sum_ns == 1_000_000 and (u.bytes_in, u.bytes_out) == (4, 9)
    assert u.src == Endpoint("wep", "shop", "frontend-7bbcdbbcbf-*")
    assert u.dst == Endpoint("wep", "shop", "cart-5d9f8-*")
    assert u.service == ServiceRef("cart", "shop", "http", 80)
    assert sum(u.hist.values()) == 2
    (u,) = ingest.updates(report([http_data(count=2, duration_ms=3, duration_max_ms=2)]), cache)
    assert (u.duration_sum_ns, u.duration_max_ns) == (3_000_000, 2_000_000)


def test_ingest_overflow_and_exact_counts(cache: MetadataCache) -> None:
    # Felix: stats count but no entries -> one overflow entry with type ""
    ds = report([], seen=12)
    (u,) = ingest.updates(ds, cache)
    assert (u.overflow, u.count, u.type) == (True, 12, "")
    # the collector's count-0 entry gets the tuple's remaining requests
    ds = report([http_data(count=0, domain="", method="", path="", type_="HTTP/1.1")], seen=5)
    (u,) = ingest.updates(ds, cache)
    assert (u.overflow, u.count) == (True, 5)
    # some detailed, some over the cap: nothing lost
    ds = report([http_data(count=3), http_data(path="/b", count=2)], seen=9)
    ups = ingest.updates(ds, cache)
    assert sum(u.count for u in ups) == 9 == ingest.requests_in(ds)
    assert [u.overflow for u in ups] == [False, False, True]
    # only DELTA statistics count
    ds = report([], seen=4)
    ds.stats[0].relativity = pb.Statistic.ABSOLUTE
    assert ingest.updates(ds, cache) == []


def test_ingest_hostile_values_do_not_break_records(cache: MetadataCache) -> None:
    hd = http_data(path="/" + "é" * 9000, method="X" * 1000, user_agent="U" * 9000,
                   domain="d" * 400, code=-5, duration_ms=-3, count=1)
    ds = report([hd], sport=70000, dport=-1)
    agg = Aggregator(AggregationSettings(http_header_info="IncludeL7HTTPHeaderInfo",
                                         url_char_limit=10_000), "n", 0)
    for u in ingest.updates(ds, cache):
        agg.add(u)
    (r,) = agg.flush(1)
    assert decode_record(encode_record(r)) == r
    assert r.source_port_num == 0 and r.dest_port_num == 0 and r.response_code == ""


def test_percentiles_match_contract_quantile() -> None:
    import random

    from l7scope.node.aggregate import percentiles

    rng = random.Random(3)
    for _ in range(200):
        hist: dict[int, int] = {}
        for _ in range(rng.randint(1, 30)):
            latency.add(hist, rng.randint(0, 5_000_000), rng.randint(1, 50))
        assert percentiles(hist) == tuple(latency.quantile(hist, q) for q in (0.5, 0.9, 0.99))
    assert percentiles({}) == (0, 0, 0)


def test_enricher_memo_follows_cache_changes(cache: MetadataCache) -> None:
    from l7scope.node.enrich import Enricher
    from l7scope.testing.node_inputs import pod

    en = Enricher(cache)
    assert en.endpoint("10.1.1.99").type == "net"
    cache.upsert(pod("new-1", "shop", "10.1.1.99"))
    assert en.endpoint("10.1.1.99") == Endpoint("wep", "shop", "new-1")
