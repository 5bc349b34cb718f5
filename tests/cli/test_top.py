"""`l7scope top --once` against a real server: the rows are the expected edges / routes with the
expected request and error counts, in the asked order."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from typing import Any

import pytest
from cli_support import L7SCOPE, Loaded, cli_env

WINDOW_S = 7200  # the data set lies about an hour back


def top(env: Loaded, *args: str) -> dict[str, Any]:
    res = subprocess.run([L7SCOPE, "top", "--once", "-o", "json", "--window", "2h", "--limit", "1000", *args],
                         env=cli_env(env.server.url, env.server.token), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def expected(env: Loaded, keys: list[str], pred: Any = None) -> dict[tuple[Any, ...], tuple[int, int]]:
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for r in env.records:
        if r["type"] == "unlogged" or (pred and not pred(r)):
            continue
        k = tuple(r[f] for f in keys)
        out[k][0] += int(r["count"])
        out[k][1] += int(r["count"]) if str(r["response_code"])[:1] in ("4", "5") else 0
    return {k: (v[0], v[1]) for k, v in out.items()}


EDGE_KEYS = ["src_namespace", "src_name_aggr", "dest_service_namespace", "dest_service_name",
             "dest_namespace", "dest_name_aggr"]
ROUTE_KEYS = ["dest_service_namespace", "dest_service_name", "method", "url"]


@pytest.mark.parametrize("sort", ["rps", "errors", "p99"])
def test_top_edges(loaded_server: Loaded, sort: str) -> None:
    ans = top(loaded_server, "--by", "edges", "--sort", sort)
    rows = ans["rows"]
    got = {tuple(r["key"][f] for f in EDGE_KEYS): (r["count"], r["errors"]) for r in rows}
    assert got == expected(loaded_server, EDGE_KEYS)
    for r in rows:
        assert r["rps"] == pytest.approx(r["count"] / WINDOW_S)
    metric = {"rps": "count", "errors": "error_rate", "p99": "p99"}[sort]
    values = [r[metric] if r[metric] is not None else -1 for r in rows]
    assert values == sorted(values, reverse=True)


def test_top_routes_with_a_filter(loaded_server: Loaded) -> None:
    ans = top(loaded_server, "--by", "routes", "--to-namespace", "shop", "--not", "--http-method", "GET")
    got = {tuple(r["key"][f] for f in ROUTE_KEYS): (r["count"], r["errors"]) for r in ans["rows"]}
    want = expected(loaded_server, ROUTE_KEYS,
                    lambda r: "shop" in (r["dest_namespace"], r["dest_service_namespace"]) and r["method"] != "GET")
    assert got == want and got


def test_top_table_once(loaded_server: Loaded) -> None:
    res = subprocess.run([L7SCOPE, "top", "--once", "--window", "2h", "--limit", "3"],
                         env=cli_env(loaded_server.server.url, loaded_server.server.token), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "edges" in lines[0] and "requests not logged in detail" in res.stdout
    header = next(line for line in lines if "SOURCE" in line)
    assert "REQ/S" in header and "ERR%" in header and "P99" in header
    assert sum(1 for line in lines if "\u2502" in line) == 3  # three data rows
