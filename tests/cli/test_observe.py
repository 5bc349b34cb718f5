"""`l7scope observe` against a real server: every filter, `--not`, every output format, the file /
stdin path giving the same answers as the server, and the error when the server is unreachable.

Expected answers are computed here with plain Python predicates over the records the test
ingested (not with the code under test)."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cli_support import L7SCOPE, Loaded, cli_env, free_port, run_pty
from click.testing import CliRunner

from l7scope.observe.cli import observe

R = dict[str, Any]


def run(args: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(observe, args, input=stdin, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def jsonl(text: str) -> list[R]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def canon(r: R) -> bytes:
    return msgspec.json.encode(r, order="sorted")


def served(env: Loaded, *args: str) -> list[R]:
    code, out, err = run([*args, *env.window(), "--all", "-o", "jsonl"])
    assert code == 0, err
    return jsonl(out)


def workloads_of(env: Loaded, ns: str, svc: str) -> set[tuple[str, str]]:
    return {(str(r["dest_namespace"]), str(r["dest_name_aggr"])) for r in env.records
            if r["dest_service_name"] == svc and r["dest_service_namespace"] == ns}


def _to_ns(r: R, ns: str) -> bool:
    return r["dest_namespace"] == ns or r["dest_service_namespace"] == ns


CASES: list[tuple[list[str], Callable[[R], bool]]] = [
    (["--namespace", "payments"],
     lambda r: "payments" in (r["src_namespace"], r["dest_namespace"], r["dest_service_namespace"])),
    (["--from-namespace", "shop"], lambda r: r["src_namespace"] == "shop"),
    (["--to-namespace", "payments"], lambda r: _to_ns(r, "payments")),
    (["--to-service", "shop/cartservice"],
     lambda r: r["dest_service_name"] == "cartservice" and r["dest_service_namespace"] == "shop"),
    (["--to-service", "redis"], lambda r: r["dest_service_name"] == "redis"),
    (["--from-workload", "checkout"], lambda r: r["src_name_aggr"] == "checkout-6b7d8c9f5-*"),
    (["--from-workload", "frontend/frontend"],
     lambda r: r["src_namespace"] == "frontend" and r["src_name_aggr"] == "frontend-*"),
    (["--to-workload", "redis-0"], lambda r: r["dest_name_aggr"] == "redis-0"),
    (["--to-workload", "shop/cartservice-5c8d7f9b4-*"],
     lambda r: r["dest_namespace"] == "shop" and r["dest_name_aggr"] == "cartservice-5c8d7f9b4-*"),
    (["--http-method", "post"], lambda r: r["method"] == "POST"),
    (["--http-method", "GET", "--http-method", "PUT"], lambda r: r["method"] in ("GET", "PUT")),
    (["--http-status", "5+"], lambda r: str(r["response_code"]).startswith("5")),
    (["--http-status", "404"], lambda r: r["response_code"] == "404"),
    (["--http-status", "20+"], lambda r: str(r["response_code"]).startswith("20")),
    (["--http-path", "/cart.*"], lambda r: re.fullmatch(r"[^/]*/cart.*", str(r["url"])) is not None),
    (["--http-path", "/product/[0-9]+"], lambda r: str(r["url"]).endswith("/product/42")),
    (["--selector", 'count > 20 AND type = "HTTP/2"'],
     lambda r: int(r["count"]) > 20 and r["type"] == "HTTP/2"),
    # --not
    (["--not", "--http-status", "2+"], lambda r: not str(r["response_code"]).startswith("2")),
    (["--namespace", "shop", "--not", "--to-service", "shop/cartservice"],
     lambda r: "shop" in (r["src_namespace"], r["dest_namespace"], r["dest_service_namespace"])
     and not (r["dest_service_name"] == "cartservice" and r["dest_service_namespace"] == "shop")),
    (["--not", "--from-namespace", "frontend", "--not", "--from-namespace", "shop"],
     lambda r: r["src_namespace"] not in ("frontend", "shop")),
    (["--not", "--http-method=GET", "--http-status", "5+"],
     lambda r: r["method"] != "GET" and str(r["response_code"]).startswith("5")),
    # several flags: AND
    (["--from-namespace", "frontend", "--to-service", "shop/checkout", "--http-method", "POST"],
     lambda r: r["src_namespace"] == "frontend" and r["dest_service_name"] == "checkout"
     and r["method"] == "POST"),
]


def ids(case: tuple[list[str], Any]) -> str:
    return " ".join(case[0])


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_filter_matches_exactly_the_expected_records(env_server: Loaded, case: tuple[list[str], Callable[[R], bool]]) -> None:
    args, pred = case
    got = served(env_server, *args)
    want = [r for r in env_server.records if pred(r)]
    assert want, "the data set must exercise the filter"
    assert len(want) < len(env_server.records), "the filter must exclude something"
    assert Counter(map(canon, got)) == Counter(map(canon, want))
    ends = [r["end_time"] for r in got]
    assert ends == sorted(ends), "oldest first"


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_file_input_gives_the_server_answer(env_server: Loaded, case: tuple[list[str], Any], tmp_path: Any) -> None:
    args, _ = case
    code, everything, err = run([*env_server.window(), "--all", "-o", "jsonl"])
    assert code == 0, err
    saved = tmp_path / "all.jsonl"
    saved.write_text(everything)
    code, server_side, err = run([*args, *env_server.window(), "--all", "-o", "jsonl"])
    assert code == 0, err
    code, local, err = run(["--input", str(saved), *args, "-o", "jsonl"])
    assert code == 0, err
    assert local == server_side  # same records, same order, same bytes


def test_from_service_means_the_workloads_behind_it(env_server: Loaded) -> None:
    behind = workloads_of(env_server, "shop", "checkout")
    assert behind == {("shop", "checkout-6b7d8c9f5-*")}
    got = served(env_server, "--from-service", "shop/checkout")
    want = [r for r in env_server.records
            if (r["src_namespace"], r["src_name_aggr"]) in behind]
    assert got and Counter(map(canon, got)) == Counter(map(canon, want))
    code, out, _ = run(["--from-service", "shop/nothing-answers", *env_server.window(), "--all", "-o", "jsonl"])
    assert code == 0 and out == ""


def test_stdin_pipe_round_trip(env_server: Loaded) -> None:
    """`observe -o jsonl | observe - --http-status 5+` equals the server-side filter (real pipe)."""
    env = cli_env(env_server.server.url, env_server.server.token)
    window = env_server.window()
    dump = subprocess.Popen([L7SCOPE, "observe", *window, "--all", "-o", "jsonl"], env=env,
                            stdout=subprocess.PIPE)
    assert dump.stdout is not None
    piped = subprocess.run([L7SCOPE, "observe", "-", "--http-status", "5+", "-o", "jsonl"],
                           env=env, stdin=dump.stdout, capture_output=True, check=True)
    dump.stdout.close()
    assert dump.wait(30) == 0
    direct = subprocess.run([L7SCOPE, "observe", *window, "--all", "--http-status", "5+", "-o", "jsonl"],
                            env=env, capture_output=True, check=True)
    assert piped.stdout == direct.stdout
    rows = jsonl(piped.stdout.decode())
    assert rows and all(r["response_code"].startswith("5") for r in rows)
    assert len(rows) == sum(1 for r in env_server.records if str(r["response_code"]).startswith("5"))


def test_last_n_are_the_newest_oldest_first(env_server: Loaded) -> None:
    code, out, err = run(["--last", "7", "--http-status", "404", "-o", "jsonl"])
    assert code == 0, err
    got = jsonl(out)
    want = sorted((r for r in env_server.records if r["response_code"] == "404"),
                  key=lambda r: r["end_time"])[-7:]
    assert [r["end_time"] for r in got] == [r["end_time"] for r in want]
    assert len(got) == 7


def test_default_is_the_last_20_with_a_completeness_line(env_server: Loaded) -> None:
    code, out, err = run(["-o", "compact", "--no-color"])
    assert code == 0, err
    assert len(out.splitlines()) == 20
    assert f"showing 20 of {len(env_server.records)} records" in err


# --- output formats --------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 140])
def test_table_fits_the_terminal_and_is_coloured(env_server: Loaded, width: int) -> None:
    code, out = run_pty(["observe", *env_server.window(), "--all", "--to-namespace", "frontend"],
                        {"L7SCOPE_SERVER": env_server.server.url,
                         "L7SCOPE_TOKEN": env_server.server.token}, cols=width)
    assert code == 0, out
    lines = [line for line in out.splitlines() if "records" not in line]  # stderr's summary
    assert lines[0].startswith("\x1b[1mTIME")  # bold header
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert all(len(line) <= width for line in plain), max(plain, key=len)
    header = ["TIME", "SOURCE", "DESTINATION", "METHOD", "CODE", "PATH", "REQS", "MEAN"]
    assert plain[0].split() == (header if width < 88 else [*header, "MAX"])
    want = [r for r in env_server.records if _to_ns(r, "frontend")]
    assert len(lines) == 1 + len(want)
    assert any("\x1b[31m" in line or "\x1b[1;31m" in line for line in lines)  # 5xx in red
    # the hostile URL is shown escaped: no raw ESC/BEL from the record reaches the terminal
    hostile = [line for line in plain if "\\x1b" in line]
    assert hostile and all("\x07" not in line for line in lines)
    assert all("\x1b]" not in line for line in lines)


def test_compact_one_line_per_record(env_server: Loaded) -> None:
    code, out, err = run([*env_server.window(), "--all", "--http-status", "503", "-o", "compact", "--no-color"])
    assert code == 0, err
    want = [r for r in env_server.records if r["response_code"] == "503"]
    lines = out.splitlines()
    assert len(lines) == len(want)
    assert all(" -> " in line and " 503 " in line for line in lines)
    unlog = run([*env_server.window(), "--all", "--selector", 'type = "unlogged"', "-o", "compact", "--no-color"])[1]
    n_unlogged = sum(1 for r in env_server.records if r["type"] == "unlogged")
    assert n_unlogged and unlog.count("not logged in detail") == n_unlogged


def test_json_is_pretty_and_reads_back(env_server: Loaded, tmp_path: Any) -> None:
    code, out, err = run([*env_server.window(), "--all", "--to-service", "payments/payment", "-o", "json"])
    assert code == 0, err
    assert out.startswith("{\n  \"")
    dec = json.JSONDecoder()
    objs, i = [], 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(out, i)
        objs.append(obj)
    want = [r for r in env_server.records if r["dest_service_name"] == "payment"]
    assert Counter(map(canon, objs)) == Counter(map(canon, want))
    # our pretty JSON is accepted as input too
    code, back, err = run(["-", "-o", "jsonl"], stdin=out.encode())
    assert code == 0, err
    assert [canon(o) for o in jsonl(back)] == [canon(o) for o in objs]


def test_bad_input_lines_are_reported_and_skipped(env_server: Loaded) -> None:
    good = json.dumps(env_server.records[0])
    code, out, err = run(["-", "-o", "jsonl"], stdin=f"{good}\nnot json\n{good}\n".encode())
    assert code == 0
    assert len(jsonl(out)) == 2
    assert "line 2" in err


# --- errors ------------------------------------------------------------------------------------


def test_unreachable_server_names_the_url_and_how_to_set_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    res = subprocess.run([L7SCOPE, "observe", "--server", url], capture_output=True, text=True,
                         env=cli_env("http://unused"))
    assert res.returncode == 1
    assert url in res.stderr and "--server" in res.stderr and "L7SCOPE_SERVER" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_selector_shows_the_position(env_server: Loaded) -> None:
    code, _, err = run(["--selector", "dest_nmspace = shop"])
    assert code == 1
    assert "unknown field 'dest_nmspace'" in err and "position 0" in err


def test_not_must_precede_a_filter(env_server: Loaded) -> None:
    code, _, err = run(["--not", "--all"])
    assert code == 2 and "--not must be followed by a filter flag" in err


def test_print_selector() -> None:
    code, out, _ = run(["--to-service", "shop/cart", "--not", "--http-status", "5+", "--print-selector",
                        "--server", "http://127.0.0.1:1"])
    assert code == 0
    assert out.strip() == ('(dest_service_name = "cart" AND dest_service_namespace = "shop") '
                           'AND NOT response_code =~ "5[0-9][0-9]"')


def test_help_has_an_example() -> None:
    for cmd in (["observe"], ["top"], ["status"]):
        res = subprocess.run([L7SCOPE, *cmd, "--help"], capture_output=True, text=True, check=True)
        assert "Example" in res.stdout and f"l7scope {cmd[0]}" in res.stdout


def test_observe_sends_the_token_and_says_what_to_do_without_one(loaded_server: Loaded, tmp_path: Path) -> None:
    srv = loaded_server.server
    window = loaded_server.window()
    no_token = {**cli_env(srv.url), "XDG_DATA_HOME": str(tmp_path)}  # no default token file there
    res = subprocess.run([L7SCOPE, "observe", *window, "--last", "1"], env=no_token,
                         capture_output=True, text=True)
    assert res.returncode == 1 and "wants a credential" in res.stderr and "--token-file" in res.stderr
    bad = tmp_path / "bad-token"
    bad.write_text("w" * 43 + "\n")
    res = subprocess.run([L7SCOPE, "observe", *window, "--last", "1", "--token-file", str(bad)],
                         env=no_token, capture_output=True, text=True)
    assert res.returncode == 1 and "the token was refused" in res.stderr
    res = subprocess.run([L7SCOPE, "observe", *window, "--last", "1", "-o", "jsonl",
                          "--token-file", str(srv.token_file)], env=no_token, capture_output=True, text=True)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1
    missing = tmp_path / "nope"
    res = subprocess.run([L7SCOPE, "observe", "--token-file", str(missing)], env=no_token,
                         capture_output=True, text=True)
    assert res.returncode == 2 and f"no token file at {missing}" in res.stderr
