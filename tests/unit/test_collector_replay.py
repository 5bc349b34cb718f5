"""`l7scope collector replay FILE`: intervals cut by start_time, JSON lines out, bad lines counted."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from l7scope.cli import main
from l7scope.contracts.envoy_log import EnvoyLogLine, encode_line


def line(t: str, port: int, path: str = "/x") -> bytes:
    return encode_line(EnvoyLogLine(
        reporter="destination", start_time=t, duration=3, response_code=200, bytes_sent=10,
        request_method="GET", request_path=path, type="HTTP/1.1",
        downstream_remote_address=f"10.0.0.1:{port}", downstream_local_address="10.96.0.1:80"))


def test_replay_prints_one_dataplanestats_per_tuple_and_interval(tmp_path: Path) -> None:
    f = tmp_path / "envoy.log"
    rows = [
        line("2026-11-26T10:00:00.100Z", 1), line("2026-11-26T10:00:01.000Z", 1),
        line("2026-11-26T10:00:02.000Z", 2),
        b"{broken",
        line("2026-11-26T10:00:05.500Z", 1),  # next 5 s interval
        line("2026-11-26T10:00:06.000Z", 1, "/y"),
        b"",
    ]
    f.write_bytes(b"\n".join(rows) + b"\n")
    r = CliRunner().invoke(main, ["collector", "replay", str(f), "--interval", "5"])
    assert r.exit_code == 0, r.output
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(m["src_port"], int(m["stats"][0]["value"])) for m in out] == [(1, 2), (2, 1), (1, 2)]
    assert out[0]["http_data"][0]["count"] == 2 and out[0]["http_data"][0]["bytes_sent"] == 20
    assert sorted(h["request_path"] for h in out[2]["http_data"]) == ["/x", "/y"]
    assert "lines=6 bad_lines=1 invalid_lines=0 intervals=2 messages=3 requests=5" in r.stderr


def test_replay_limit_and_cap(tmp_path: Path) -> None:
    f = tmp_path / "envoy.log"
    f.write_bytes(b"".join(line("2026-11-26T10:00:00Z", 1, f"/{i}") + b"\n" for i in range(10)))
    r = CliRunner().invoke(main, ["collector", "replay", str(f), "--limit", "6",
                                  "--requests-per-interval", "2"])
    assert r.exit_code == 0, r.output
    (m,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert int(m["stats"][0]["value"]) == 6 and len(m["http_data"]) == 2


def test_collector_help_has_the_agreed_flags() -> None:
    r = CliRunner().invoke(main, ["collector", "--help"])
    assert r.exit_code == 0
    for flag in ("--envoy-log", "--dial-target", "--interval", "--requests-per-interval",
                 "--max-lag-bytes", "--als-listen", "--node-name", "--envoy-admin",
                 "--rotate-bytes", "--status-addr", "replay", "run"):
        assert flag in r.output
