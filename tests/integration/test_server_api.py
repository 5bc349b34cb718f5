"""The server's HTTP API on a real uvicorn (DuckDB store): ingest, hostile input, queries,
service graph selectors, metrics, status, OpenAPI, the CLI process and restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from contract.harness import free_port, serve

from l7scope.contracts.auth import bearer, read_token
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH, MAX_LINE_BYTES
from l7scope.contracts.detail import DETAIL_BULK_PATH, REQUESTS_PATH
from l7scope.contracts.record import L7Record, encode_record, encode_records
from l7scope.server.api import create_app
from l7scope.server.auth import SharedToken
from l7scope.server.metrics import Metrics
from l7scope.server.openapi import schema
from l7scope.server.retention import Retention
from l7scope.server.store.duckdb import DuckDBStore
from l7scope.testing import record_gen

NOW = 1_790_000_000
TR = {"from": NOW - 3600, "to": NOW}




TOKEN = "test-token-" + "x" * 40


@pytest.fixture
def api(store: DuckDBStore) -> Iterator[httpx.Client]:
    app = create_app(store, auth=SharedToken(TOKEN), retention_s=86400, clock=lambda: NOW, ui_dir=None)
    with serve(app) as url, httpx.Client(base_url=url, timeout=60, headers=bearer(TOKEN)) as c:
        yield c


def records(n: int, seed: int = 3) -> list[L7Record]:
    topo = record_gen.topology(namespaces=5, services_per_ns=3, edges=30, seed=seed)
    return record_gen.records(topo, n, NOW - 900, NOW, seed=seed, unlogged_share=0.02)


def bulk(c: httpx.Client, body: bytes, batch_id: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/x-ndjson"}
    if batch_id is not None:
        headers[BATCH_ID_HEADER] = batch_id
    return c.post(BULK_PATH, content=body, headers=headers)


def search(c: httpx.Client, **body: Any) -> httpx.Response:
    return c.post("/api/v1/l7/logs/search", json={"time_range": TR, **body})


def test_bulk_keeps_valid_lines_and_names_the_bad_ones(api: httpx.Client) -> None:
    good = records(20)
    huge = encode_record(L7Record(start_time=NOW - 5, end_time=NOW, count=1)).replace(
        b'"url":""', b'"url":"' + b"a" * (MAX_LINE_BYTES + 10) + b'"')
    lines = [encode_record(r) for r in good[:10]] + [
        b'{"start_time": 1, "end_time": "yesterday"}',      # 11 wrong type
        b'{"start_time": 1, "end_time": 2, "evil": 1}',     # 12 unknown field
        b'{"start_time": 1, "end_time": 2, "url": "\xff\xfe"}',  # 13 invalid UTF-8
        huge,                                                 # 14 over the line limit
        b"not json at all",                                   # 15
        b'{"start_time": 1, "end_time": 2, "duration_hist": {"x": 1}}',  # 16 bad bucket key
        b'{"start_time": 1, "end_time": 2, "count": -4}',    # 17 negative
        b"[1, 2, 3]",                                         # 18 not an object
        b"",                                                  # 19 blank: skipped
    ] + [encode_record(r) for r in good[10:]]
    r = bulk(api, b"\n".join(lines) + b"\n", "b-mixed")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 20 and out["duplicate"] is False
    assert [x["line"] for x in out["rejected"]] == [11, 12, 13, 14, 15, 16, 17, 18]
    assert out["rejected_total"] == 8
    reasons = {x["line"]: x["error"] for x in out["rejected"]}
    assert "end_time" in reasons[11] and "evil" in reasons[12] and "65536" in reasons[14]
    assert "duration_hist" in reasons[16] and "count" in reasons[17]
    res = search(api, page_size=1000).json()
    assert res["total_hits"] == 20
    assert res["total_requests"] == sum(x.count for x in good)


def test_duplicate_batch_is_stored_once(api: httpx.Client) -> None:
    body = encode_records(records(30))
    first = bulk(api, body, "node-a:17").json()
    second = bulk(api, body, "node-a:17").json()
    assert first["accepted"] == 30 and not first["duplicate"]
    assert second == {"accepted": 0, "rejected": [], "duplicate": True, "rejected_total": 0}
    assert search(api).json()["total_hits"] == 30
    assert bulk(api, body, "bad id with spaces").status_code == 400
    st = api.get("/api/v1/status").json()
    assert st["ingest"]["duplicate_batches"] == 1 and st["ingest"]["bodies_rejected"] == 1


def test_ten_thousand_records_in_one_body(api: httpx.Client) -> None:
    recs = records(10_000)
    body = encode_records(recs) + b'{"start_time": "x"}\n'
    out = bulk(api, body, "big").json()
    assert out["accepted"] == 10_000 and out["rejected"][0]["line"] == 10_001
    assert search(api).json()["total_hits"] == 10_000


def test_body_over_the_limit_is_refused_and_server_keeps_serving(api: httpx.Client) -> None:
    r = api.post(BULK_PATH, content=b"x" * (64 * 1024 * 1024 + 1),
                 headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert api.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("sel", [
    "url = \"'; DROP TABLE l7; --\"",
    "url = '\" OR 1=1 --'",
    'method IN ("GET\'); DELETE FROM l7; --", "x")',
    'url =~ ".*\'; DROP TABLE l7_batches; --"',
    "host = \"$p0\" OR host = \"%(p0)s\" OR host = \"?\"",
])
def test_sql_looking_selector_values_are_just_values(api: httpx.Client, sel: str) -> None:
    bulk(api, encode_records(records(50)))
    r = search(api, selector=sel)
    assert r.status_code == 200, r.text
    assert r.json()["total_hits"] == 0
    assert search(api).json()["total_hits"] == 50


@pytest.mark.parametrize(("body", "code", "extra"), [
    ({"selector": 'dest_nmspace = "x"'}, "unknown_field", {"position": 0, "field": "dest_nmspace"}),
    ({"selector": 'method = GET AND (url = "x"'}, "bad_selector", {"position": 27}),
    ({"selector": 'count = "lots"'}, "bad_value", {"field": "count"}),
    ({"sort_by": [{"field": "nope"}]}, "unknown_field", {"field": "nope"}),
    ({"time_range": {"from": "last tuesday"}}, "bad_time_range", {}),
    ({"time_range": {"from": NOW, "to": NOW - 10}}, "bad_time_range", {}),
    ({"page_size": 0}, "bad_request", {}),
    ({"page_size": "ten"}, "bad_request", {}),
    ({"selectr": ""}, "bad_request", {}),
    ({"selector": 5}, "bad_request", {}),
])
def test_search_errors(api: httpx.Client, body: dict[str, Any], code: str, extra: dict[str, Any]) -> None:
    r = api.post("/api/v1/l7/logs/search", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    for k, v in extra.items():
        assert err[k] == v


def test_non_json_bodies(api: httpx.Client) -> None:
    for content in (b"{nope", b"\xff\xfe", b"[1,2]", b'"text"', b""):
        r = api.post("/api/v1/l7/logs/search", content=content,
                     headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", content
    assert api.get("/nowhere").status_code == 404


def test_search_paging_sorting_iso_times(api: httpx.Client) -> None:
    recs = records(250)
    bulk(api, encode_records(recs))
    iso = {"from": datetime.fromtimestamp(NOW - 3600, UTC).isoformat(),
           "to": datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    by_iso = api.post("/api/v1/l7/logs/search", json={"time_range": iso}).json()
    assert by_iso["time_range"] == TR and by_iso["total_hits"] == 250
    r = api.post("/api/v1/l7/logs/search", json={
        "time_range": {"from": NOW - 3600, "to": NOW}, "page_size": 100, "page_num": 2,
        "sort_by": [{"field": "bytes_in", "descending": False}]}).json()
    assert r["total_hits"] == 250 and r["num_pages"] == 3 and len(r["hits"]) == 50
    assert [h["bytes_in"] for h in r["hits"]] == sorted(x.bytes_in for x in recs)[200:]
    rel = api.post("/api/v1/l7/logs/search", json={"time_range": {"from": "now-15m"}}).json()
    assert rel["time_range"] == {"from": NOW - 900, "to": NOW} and rel["total_hits"] == 250


def test_aggregation(api: httpx.Client) -> None:
    recs = [r for r in records(300) if r.type != "unlogged"]
    bulk(api, encode_records(recs))
    r = api.post("/api/v1/l7/logs/aggregation", json={
        "time_range": TR, "selector": 'type != "unlogged"',
        "group_by": ["dest_service_name", "response_class", "time"], "interval": 300, "limit": 5}).json()
    assert r["total_groups"] > 5 and len(r["groups"]) == 5
    counts = [g["count"] for g in r["groups"]]
    assert counts == sorted(counts, reverse=True)
    g = r["groups"][0]
    assert set(g["key"]) == {"dest_service_name", "response_class", "time"} and g["key"]["time"] % 300 == 0
    assert g["p50"] is not None and g["p50"] <= g["p99"]
    bad = api.post("/api/v1/l7/logs/aggregation", json={"group_by": ["time"]})
    assert bad.status_code == 400 and "interval" in bad.json()["error"]["message"]


def _total(api: httpx.Client, selector: str) -> int:
    r = search(api, selector=selector, page_size=1)
    assert r.status_code == 200, (selector, r.text)
    n: int = r.json()["total_requests"]
    return n


@pytest.mark.parametrize("expand", [[], ["shop"], ["*"]])
def test_servicegraph_selectors_match_their_records(api: httpx.Client, expand: list[str]) -> None:
    recs = records(600)
    bulk(api, encode_records(recs))
    g = api.post("/api/v1/servicegraph", json={"time_range": TR, "expand": expand}).json()
    assert g["edges"] and g["nodes"]
    node_ids = {n["id"] for n in g["nodes"]}
    for e in g["edges"]:
        assert e["source"] in node_ids and e["target"] in node_ids
        assert _total(api, e["selector"]) == e["totals"]["count"], e["id"]
        assert sum(s["count"] for s in e["stats"].values() if s) == e["totals"]["count"]
        assert sum(r["count"] for r in e["top_routes"]) <= e["totals"]["count"]
        assert len(e["top_routes"]) <= 5
    for n in g["nodes"]:
        assert n["id"].split("/", 1)[0] in ("namespace", "svc", "wep", "net", "hep")
        if not n["expanded"] and n["type"] in ("namespace", "net"):
            assert _total(api, n["selector"]) == n["stats"]["count"], n["id"]
    logged = sum(x.count for x in recs if x.type != "unlogged")
    unlogged = sum(x.count for x in recs if x.type == "unlogged")
    assert g["completeness"] == {"requests_logged": logged, "requests_unlogged": unlogged,
                                 "requests_seen": logged + unlogged,
                                 "ratio": logged / (logged + unlogged)}
    if expand:
        assert any(n["id"].startswith("svc/shop/") for n in g["nodes"])
        assert any(e["kind"] == "backend" for e in g["edges"])
    else:
        assert all(n["type"] in ("namespace", "net") for n in g["nodes"])


def test_servicegraph_stats_by_class(api: httpx.Client) -> None:
    hist = {"100": 3, "120": 1}
    base = {"start_time": NOW - 10, "end_time": NOW - 5, "src_namespace": "a", "src_name_aggr": "x-*",
            "src_type": "wep", "dest_namespace": "b", "dest_name_aggr": "y-*", "dest_type": "wep",
            "dest_service_namespace": "b", "dest_service_name": "y", "method": "GET", "url": "y.b/z"}
    lines = [
        {**base, "count": 4, "response_code": "200", "bytes_in": 40, "bytes_out": 400,
         "duration_mean": 1000, "duration_max": 5000, "duration_hist": hist},
        {**base, "count": 1, "response_code": "503", "duration_mean": 7000, "duration_max": 7000},
        {**base, "count": 2, "response_code": "", "type": "tcp"},
    ]
    bulk(api, b"\n".join(json.dumps(x).encode() for x in lines))
    [e] = api.post("/api/v1/servicegraph", json={"time_range": TR}).json()["edges"]
    assert e["id"] == "namespace/a->namespace/b"
    assert e["stats"]["2xx"]["count"] == 4 and e["stats"]["2xx"]["bytes_out"] == 400
    assert e["stats"]["2xx"]["p50"] is not None
    assert e["stats"]["5xx"]["mean_duration"] == 7000 and e["stats"]["5xx"]["p99"] is None
    assert e["stats"]["no_response"]["count"] == 2 and e["stats"]["4xx"] is None
    assert e["totals"]["count"] == 7 and e["totals"]["errors"] == 1
    assert e["totals"]["min_duration"] == 0 and e["totals"]["max_duration"] == 7000
    assert e["top_routes"][0] == {"method": "GET", "url": "y.b/z", "count": 7, "errors": 1,
                                  "error_rate": 1 / 7, "p99": e["top_routes"][0]["p99"]}


def test_metrics_and_status(api: httpx.Client) -> None:
    bulk(api, encode_records(records(100)) + b"oops\n")
    search(api)
    api.post("/api/v1/l7/logs/search", json={"selector": "("})
    text = api.get("/metrics").text
    assert "l7scope_edge_requests_total{source=" in text
    assert 'l7scope_ingest_records_total{result="accepted"} 100' in text
    assert 'l7scope_ingest_records_total{result="rejected"} 1' in text
    assert 'l7scope_queries_total{kind="search",result="ok"} 1' in text
    assert 'l7scope_queries_total{kind="search",result="error"} 1' in text
    assert "l7scope_store_records 100" in text
    st = api.get("/api/v1/status").json()
    assert st["store"]["kind"] == "duckdb" and st["store"]["records"] == 100
    assert st["queries"]["search"] == 2 and st["queries"]["errors"] == 1
    assert st["retention_s"] == 86400


def _check(obj: Any, sch: dict[str, Any], where: str) -> None:
    """Minimal JSON-schema check: types, required keys, nested properties and items."""
    types = sch.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        py = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
              "boolean": bool, "null": type(None)}
        assert any(isinstance(obj, py[t]) for t in allowed), f"{where}: {obj!r} is not {allowed}"
    if "oneOf" in sch:
        errors = 0
        for alt in sch["oneOf"]:
            try:
                _check(obj, alt, where)
            except AssertionError:
                errors += 1
        assert errors < len(sch["oneOf"]), where
    if isinstance(obj, dict):
        for k in sch.get("required", []):
            assert k in obj, f"{where}: missing {k}"
        for k, sub in sch.get("properties", {}).items():
            if k in obj:
                _check(obj[k], sub, f"{where}.{k}")
    if isinstance(obj, list) and "items" in sch:
        for i, x in enumerate(obj[:20]):
            _check(x, sch["items"], f"{where}[{i}]")


def test_openapi_describes_every_route_and_real_answers(api: httpx.Client) -> None:
    served = api.get("/openapi.json").json()
    assert served == json.loads(json.dumps(schema()))
    bulk_answer = bulk(api, encode_records(records(200)) + b"bad\n").json()
    paths = served["paths"]
    assert set(paths) == {BULK_PATH, "/api/v1/l7/logs/search", "/api/v1/l7/logs/aggregation", "/api/v1/l7/logs/export",
                          "/api/v1/servicegraph", "/api/v1/status", "/healthz", "/metrics", "/openapi.json",
                          DETAIL_BULK_PATH, REQUESTS_PATH}
    answers = {
        BULK_PATH: bulk_answer,
        "/api/v1/l7/logs/search": search(api).json(),
        "/api/v1/l7/logs/aggregation": api.post("/api/v1/l7/logs/aggregation", json={
            "time_range": TR, "group_by": ["dest_service_name"]}).json(),
        "/api/v1/servicegraph": api.post("/api/v1/servicegraph", json={"time_range": TR, "expand": ["*"]}).json(),
        "/api/v1/status": api.get("/api/v1/status").json(),
        "/healthz": api.get("/healthz").json(),
        REQUESTS_PATH: api.post(REQUESTS_PATH, json={"request_id": "none", "time_range": TR}).json(),
        DETAIL_BULK_PATH: api.post(DETAIL_BULK_PATH, content=b'{"request_id": "r"}\n',
                                   headers={"Content-Type": "application/x-ndjson"}).json(),
    }
    for path, answer in answers.items():
        op = paths[path].get("post") or paths[path]["get"]
        _check(answer, op["responses"]["200"]["content"]["application/json"]["schema"], path)
    err = api.post("/api/v1/l7/logs/search", json={"selector": "x ="}).json()
    _check(err, paths["/api/v1/l7/logs/search"]["post"]["responses"]["400"]["content"]["application/json"]["schema"], "error")
    body_schema = paths["/api/v1/l7/logs/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"selector", "time_range", "page_size", "page_num", "sort_by"} <= set(body_schema["properties"])
    for ref in json.dumps(served).split('"$ref": "')[1:]:
        name = ref.split('"')[0].rsplit("/", 1)[1]
        assert name in served["components"]["schemas"], name


def test_retention_removes_old_records(store: DuckDBStore) -> None:
    recs = [L7Record(start_time=NOW - 90_000, end_time=NOW - 90_000 + i, count=1) for i in range(5)]
    recs += [L7Record(start_time=NOW - 50, end_time=NOW - 50 + i, count=1) for i in range(5)]
    from l7scope.server.columns import to_columns

    store.insert(to_columns(recs))
    metrics = Metrics()
    cutoff = Retention(store, 86400, metrics, clock=lambda: NOW).run_once()
    assert cutoff == NOW - 86400 and metrics.retention_cutoff == cutoff
    assert store.stats().records == 5 and store.stats().oldest_end_time == NOW - 50


# --- the real `l7scope server` process ------------------------------------------------------


def _start_cli(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "l7scope"
    proc = subprocess.Popen([str(exe), "server", "--port", str(port), "--data-dir", str(data_dir),
                             "--retention", "30d"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_server_remembers_batches_across_restart(tmp_path: Path) -> None:
    port = free_port()
    recs = record_gen.records(record_gen.topology(seed=5), 40, int(time.time()) - 60, int(time.time()), seed=5)
    body = encode_records(recs)
    proc = _start_cli(tmp_path, port)
    headers = {BATCH_ID_HEADER: "n1:1", "Content-Type": "application/x-ndjson"}
    try:
        token_file = tmp_path / "token"  # created by the first start, mode 0600
        assert token_file.stat().st_mode & 0o777 == 0o600
        auth = bearer(read_token(token_file))
        r = httpx.post(f"http://127.0.0.1:{port}{BULK_PATH}", content=body, headers=headers | auth)
        assert r.json()["accepted"] == 40
    finally:
        _stop(proc)
    assert proc.returncode == 0 or proc.returncode == -signal.SIGTERM
    proc = _start_cli(tmp_path, port)
    try:  # the same token after a restart: the file is kept
        r = httpx.post(f"http://127.0.0.1:{port}{BULK_PATH}", content=body, headers=headers | auth)
        assert r.json()["duplicate"] is True
        st = httpx.get(f"http://127.0.0.1:{port}/api/v1/status", headers=auth).json()
        assert st["store"]["records"] == 40 and st["store"]["location"] == str(tmp_path / "l7.duckdb")
    finally:
        _stop(proc)


def test_cli_help_has_an_example() -> None:
    exe = Path(sys.executable).parent / "l7scope"
    out = subprocess.run([str(exe), "server", "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "120"}).stdout
    assert "--store [duckdb|clickhouse]" in out and "Examples:" in out
