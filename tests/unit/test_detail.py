"""Request detail (docs/detail.md): the decision, sampling, trace parsing, redaction, bounds, the
collector's picker and the node agent's keeper (mode per Service, key of the aggregated record,
cap with counted drops)."""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgspec
import pytest

from l7scope.collector.batch import Batcher
from l7scope.collector.decode import decode_block
from l7scope.collector.detail import Picker, reason_of
from l7scope.contracts import detail as dc
from l7scope.contracts.envoy_log import json_format
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator
from l7scope.node.detail import DetailKeeper
from l7scope.node.enrich import Enricher
from l7scope.node.metadata import MetadataCache
from l7scope.testing.node_inputs import shop

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def line(**kw: Any) -> bytes:
    base: dict[str, Any] = {
        "reporter": "destination", "start_time": "2026-12-04T20:00:00.000Z", "duration": 3,
        "duration_us": 3000, "response_code": 200, "response_flags": "-", "bytes_sent": 10,
        "bytes_received": 5, "request_path": "/cart/7?x=1", "request_method": "GET",
        "request_id": "rid-1", "protocol": "HTTP/1.1", "type": "HTTP/1.1",
        "downstream_remote_address": "10.1.1.10:40000",
        "downstream_local_address": "10.96.0.10:80", "domain": "cart", "grpc_status": None,
        "upstream_host": "10.1.2.20:8080",
        "detail": {"traceparent": None, "b3_trace": None, "b3_span": None, "b3": None},
    }
    base.update(kw)
    return json.dumps(base).encode()


def decode(*lines: bytes) -> list[Any]:
    out, bad = decode_block(b"\n".join(lines) + b"\n")
    assert bad == 0
    return out


S = dc.DetailSettings(slowThresholdMs=500, sampleOneIn=0)


@pytest.mark.parametrize(("kw", "want"), [
    ({}, None),
    ({"response_code": 503}, "error"),
    ({"response_code": 404}, None),
    ({"response_code": 0, "response_flags": "UF"}, "error"),
    ({"response_flags": "DC"}, "error"),
    ({"grpc_status": 14}, "error"),
    ({"grpc_status": 0}, None),
    ({"duration_us": 500_000}, "slow"),
    ({"duration_us": 499_999}, None),
    ({"duration_us": None, "duration": 600}, "slow"),
    ({"response_code": 500, "duration_us": 900_000}, "error"),  # error before slow
])
def test_reason(kw: dict[str, Any], want: str | None) -> None:
    (ln,) = decode(line(**kw))
    assert reason_of(ln, 500, 500_000, 0) == want


def test_4xx_is_an_error_when_asked() -> None:
    (ln,) = decode(line(response_code=404))
    assert reason_of(ln, 400, 500_000, 0) == "error"
    assert Picker(dc.DetailSettings(include4xx=True)).error_floor == 400


def test_sampling_is_deterministic_and_exact_in_expectation() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [i for i in ids if dc.sampled(i, 50)]
    assert picked == [i for i in ids if zlib.crc32(i.encode()) % 50 == 0]
    # the estimate (picked x rate) is within 10 % of the truth for 20k ids (binomial sd ~ 3 %)
    assert abs(len(picked) * 50 - len(ids)) < 0.1 * len(ids)
    assert not dc.sampled("", 50) and not dc.sampled(None, 50) and not dc.sampled("x", 0)
    assert dc.sampled("anything", 1)


@pytest.mark.parametrize(("det", "want"), [
    ({"traceparent": TP}, ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "w3c")),
    ({"traceparent": TP.upper()}, ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "w3c")),
    ({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}, ("", "", "")),  # invalid id
    ({"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, ("", "", "")),
    ({"traceparent": "garbage", "b3_trace": "80f198ee56343ba864fe8b2a57d3eff7",
      "b3_span": "e457b5a2e4d86bd1"}, ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "b3")),
    ({"b3_trace": "a3ce929d0e0e4736", "b3_span": "e457b5a2e4d86bd1"},
     ("0000000000000000a3ce929d0e0e4736", "e457b5a2e4d86bd1", "b3")),  # 64-bit B3 id, padded
    ({"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
     ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "b3")),
    ({"b3_trace": "xyz", "b3_span": "e457b5a2e4d86bd1"}, ("", "", "")),
    ({}, ("", "", "")),
])
def test_parse_trace(det: dict[str, Any], want: tuple[str, str, str]) -> None:
    assert dc.parse_trace(det) == want


def test_redaction_in_settings_format_and_decoder() -> None:
    s = dc.DetailSettings(requestHeaders=["X-Tenant", "Authorization", "cookie", "x-tenant"],
                          responseHeaders=["Set-Cookie", "x-version", "Proxy-Authorization"])
    assert s.request_headers == ("x-tenant",) and s.response_headers == ("x-version",)
    fmt = dc.envoy_format(("authorization", "x-tenant"), ("set-cookie",))
    assert "req:x-tenant" in fmt and not any("authorization" in k or "cookie" in k for k in fmt)
    assert all(v.endswith(f":{dc.MAX_ID}%") or v.endswith(f":{dc.MAX_HEADER_VALUE}%")
               for v in fmt.values())  # every value Envoy logs is cut to a fixed length
    raw = b'{"request_headers": {"Authorization": "Bearer x", "x-tenant": "t"},' \
          b' "response_headers": {"set-cookie": "a=b"}}'
    rec = dc.decode_record(raw)
    assert rec.request_headers == {"x-tenant": "t"} and rec.response_headers == {}
    assert dc.headers_of({"req:cookie": "c", "req:x-a": "1", "resp:x-b": None}, "req:") == {"x-a": "1"}


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        dc.DetailSettings(requestHeaders=["bad header"])
    with pytest.raises(ValueError):
        dc.DetailSettings(requestHeaders=[f"x-{i}" for i in range(dc.MAX_HEADERS + 1)])
    with pytest.raises(ValueError):
        dc.DetailSettings(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        dc.DetailSettings(defaultMode="all")  # type: ignore[arg-type]
    assert NodeSettings.model_validate({"l7Detail": {"defaultMode": "sampled"}}).l7_detail.default_mode == "sampled"


def test_record_bounds() -> None:
    with pytest.raises(dc.DetailError):
        dc.decode_record(b'{"request_id": "' + b"x" * 200 + b'"}')
    with pytest.raises(dc.DetailError):
        dc.decode_record(b'{"sample_rate": 0}')
    with pytest.raises(dc.DetailError):
        dc.decode_record(b'{"nope": 1}')
    with pytest.raises(dc.DetailError):
        dc.decode_record(b"{" + b" " * dc.MAX_RECORD_BYTES + b"}")
    many = {f"h{i}": "v" for i in range(dc.MAX_HEADERS + 1)}
    with pytest.raises(dc.DetailError):
        dc.decode_record(msgspec.json.encode({"request_headers": many}))


def test_modes() -> None:
    assert dc.mode_of(None, "errors") == "errors"
    assert dc.mode_of(" Sampled ", "errors") == "sampled"
    assert dc.mode_of("bogus", "slow") == "slow"
    assert [m for m in dc.MODES if dc.keeps(m, "error")] == ["errors", "slow", "sampled"]
    assert [m for m in dc.MODES if dc.keeps(m, "slow")] == ["slow", "sampled"]
    assert [m for m in dc.MODES if dc.keeps(m, "sampled")] == ["sampled"]


def test_json_format_has_detail_only_when_asked() -> None:
    assert "detail" not in json_format("tcp")
    assert json_format("%PROTOCOL%", {"traceparent": "%REQ(TRACEPARENT):128%"})["detail"] == {
        "traceparent": "%REQ(TRACEPARENT):128%"}


def test_picker_builds_records_and_counts_the_cap() -> None:
    p = Picker(dc.DetailSettings(slowThresholdMs=500, sampleOneIn=0, maxPerInterval=2))
    b = Batcher(picker=p)
    lines = decode(
        line(response_code=503, request_id="r-err",
             detail={"traceparent": TP, "req:x-tenant": "acme", "resp:x-version": "7"}),
        line(duration_us=700_000, request_id="r-slow"),
        line(),  # a plain 200: not kept
        line(response_code=502, request_id="r-over"),  # over the cap of 2
        line(type="tcp", request_method=None, response_code=0, response_flags="UF"),  # no HTTP
    )
    b.add(lines)
    res = b.flush()
    assert res.details == 2 and p.dropped == 1 and p.picked == 2
    recs = [dc.decode_record(r) for m in res.messages for r in m.request_details]
    err, slow = sorted(recs, key=lambda r: r.request_id)
    assert (err.reason, err.sample_rate, err.response_code, err.path) == ("error", 1, "503", "/cart/7")
    assert (err.trace_id, err.span_id, err.trace_format) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "w3c")
    assert err.request_headers == {"x-tenant": "acme"} and err.response_headers == {"x-version": "7"}
    assert (slow.reason, slow.duration_us) == ("slow", 700_000)
    # the aggregated counts still hold every line
    assert sum(s.value for m in res.messages for s in m.stats) == 5
    b.add(decode(line(response_code=500)))
    assert b.flush().details == 1  # the cap is per interval


def _cache(annotation: str | None) -> MetadataCache:
    cache = MetadataCache()
    objs = shop()
    if annotation is not None:
        for o in objs:
            if o["kind"] == "Service" and o["metadata"]["name"] == "cart":
                o["metadata"]["annotations"][dc.ANNOTATION] = annotation
    cache.replace_all(objs)
    return cache


def _reports(one_in: int, n: int) -> list[Any]:
    p = Picker(dc.DetailSettings(sampleOneIn=one_in, maxPerInterval=100_000))
    b = Batcher(picker=p)
    lines = [line(request_id=f"ok-{i}") for i in range(n)]
    lines += [line(response_code=500, request_id="bad"), line(duration_us=2_000_000, request_id="slow")]
    b.add(decode(*lines))
    return b.flush().messages


@pytest.mark.parametrize(("annotation", "default", "want"), [
    (None, "errors", {"error"}),
    ("off", "sampled", set()),
    ("slow", "errors", {"error", "slow"}),
    ("sampled", "off", {"error", "slow", "sampled"}),
])
def test_keeper_mode_per_service(annotation: str | None, default: str, want: set[str]) -> None:
    cache = _cache(annotation)
    en = Enricher(cache)
    settings = NodeSettings.model_validate({"l7Detail": {"defaultMode": default}})
    agg = Aggregator(settings.aggregation(), "node-a", 100.0)
    keeper = DetailKeeper(settings.l7_detail, "node-a", 100.0)
    for ds in _reports(10, 200):
        for u in ingest.updates(ds, en):
            agg.add(u)
        keeper.add(ds, en, agg)
    records = agg.flush(101.0)
    kept = keeper.flush(101.0)
    assert {r.reason for r in kept} == want
    if "sampled" in want:
        sampled = [r for r in kept if r.reason == "sampled"]
        assert sum(r.sample_rate for r in sampled) == 10 * sum(
            1 for i in range(200) if dc.sampled(f"ok-{i}", 10))
    by_key = {(r.url, r.response_code): r for r in records}
    for d in kept:  # each detail names the aggregated record it was counted in
        rec = by_key[(d.url, d.response_code)]
        assert all(getattr(d, f) == getattr(rec, f) for f in dc.DRILL_FIELDS)
        assert (d.start_time, d.end_time, d.host, d.dest_service_name) == (100, 101, "node-a", "cart")
        assert d.url == "cart/cart/{int}" and d.path == "/cart/7"
    assert keeper.stats.off == keeper.stats.received - len(kept)


def test_keeper_cap_counts_drops() -> None:
    cache = _cache("sampled")
    en = Enricher(cache)
    settings = NodeSettings.model_validate({"l7Detail": {"maxPerInterval": 3}})
    agg = Aggregator(settings.aggregation(), "node-a", 100.0)
    keeper = DetailKeeper(settings.l7_detail, "node-a", 100.0)
    for ds in _reports(1, 10):  # every request sampled: 12 details
        for u in ingest.updates(ds, en):
            agg.add(u)
        keeper.add(ds, en, agg)
    assert len(keeper.flush(101.0)) == 3
    assert keeper.stats.dropped == 9 and keeper.stats.received == 12


def test_the_page_drills_down_on_the_contracts_fields() -> None:
    import re
    from pathlib import Path

    js = (Path(dc.__file__).parents[1] / "server" / "ui" / "js" / "httptab.js").read_text()
    m = re.search(r"const DRILL_FIELDS = \[([^\]]*)\]", js)
    assert m is not None
    assert tuple(re.findall(r'"([a-z_]+)"', m.group(1))) == dc.DRILL_FIELDS


def test_the_servers_drill_down_body_has_the_contracts_fields() -> None:
    from l7scope.server.detail import RecordKey

    assert tuple(RecordKey.model_fields) == dc.DRILL_FIELDS


def test_envoy_config_cli_logs_allowlisted_headers_never_redacted_ones() -> None:
    from click.testing import CliRunner

    from l7scope.proxy.cli import envoy_config

    r = CliRunner().invoke(envoy_config, ["--detail-request-header", "X-Tenant", "--detail-request-header",
                                          "Cookie", "--detail-response-header", "set-cookie"])
    assert r.exit_code == 0, r.output
    assert r.output.count("%REQ(X-TENANT):256%") == 2  # both HTTP chains
    assert "COOKIE" not in r.output.upper().replace("X-TENANT", "")
    off = CliRunner().invoke(envoy_config, ["--no-detail-log"])
    assert off.exit_code == 0 and "TRACEPARENT" not in off.output
