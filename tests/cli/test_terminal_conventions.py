"""Terminal conventions of `observe`, `top` and `status` (issue 19 part 4), each piped (a
subprocess whose stdout is a pipe) and on a real pseudo-terminal: full values when piped,
NO_COLOR and --color, -n/--namespace, --since/--until checked by the CLI, shell completion,
L7SCOPE_SERVER on every command."""

from __future__ import annotations

import os
import re
import subprocess

from cli_support import L7SCOPE, Loaded, run_pty

ESC = "\x1b["
LONG = "frontend/frontend:80"


def _env(srv: Loaded, **extra: str) -> dict[str, str]:
    return {"L7SCOPE_SERVER": srv.server.url, "L7SCOPE_TOKEN": srv.server.token, **extra}


def _piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    return subprocess.run([L7SCOPE, *args], env={**full, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_piped_table_keeps_full_values_and_pty_cuts_them(loaded_server: Loaded) -> None:
    args = ["observe", *loaded_server.window(), "--all", "-n", "frontend"]
    piped = _piped(args, _env(loaded_server))
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert ESC not in piped.stdout  # a pipe is not coloured
    assert lines[0].split()[-1] == "MAX"  # no column dropped
    assert any(len(line) > 80 for line in lines)  # sized to content, not to 80 columns
    assert "\u2026" not in piped.stdout  # nothing cut
    assert all(LONG in line or "frontend" in line for line in lines[1:])
    code, out = run_pty(args, _env(loaded_server), cols=80)
    assert code == 0, out
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines()
    assert all(len(line) <= 80 for line in plain), max(plain, key=len)
    assert ESC in out  # a terminal is coloured


def test_wide_output_on_a_terminal_cuts_nothing(loaded_server: Loaded) -> None:
    code, out = run_pty(["observe", *loaded_server.window(), "--all", "-o", "wide", "--color", "never"],
                        _env(loaded_server), cols=80)
    assert code == 0, out
    assert "\u2026" not in out and ESC not in out
    assert any(len(line) > 80 for line in out.splitlines())


def test_no_color_is_honoured_on_a_terminal(loaded_server: Loaded) -> None:
    args = ["observe", *loaded_server.window(), "--last", "5"]
    code, out = run_pty(args, _env(loaded_server, NO_COLOR="1"))
    assert code == 0, out
    assert ESC not in out
    code, out = run_pty([*args, "--color", "always"], _env(loaded_server, NO_COLOR="1"))
    assert code == 0 and ESC in out  # an explicit --color always wins over NO_COLOR
    piped = _piped([*args, "--color=always"], _env(loaded_server))
    assert piped.returncode == 0 and ESC in piped.stdout
    code, out = run_pty([*args, "--no-color"], _env(loaded_server))
    assert code == 0 and ESC not in out


def test_top_piped_keeps_every_column_and_limit_replaces_n(loaded_server: Loaded) -> None:
    env = _env(loaded_server)
    res = _piped(["top", "--once", "--window", "2d", "--limit", "3", "-n", "frontend"], env)
    assert res.returncode == 0, res.stderr
    header = next(line for line in res.stdout.splitlines() if "SOURCE" in line)
    assert [w for w in header.split() if w.isalnum()][-2:] == ["P99", "MAX"]
    assert "\u2026" not in res.stdout and ESC not in res.stdout
    bad = _piped(["top", "--once", "--window", "five minutes"], env)
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_since_until_are_checked_by_the_cli(loaded_server: Loaded) -> None:
    env = _env(loaded_server)
    for value in ("5 minutes", "yesterday", "-5m", "now+1h"):
        res = _piped(["observe", "--since", value], env)
        assert res.returncode == 2, (value, res.stderr)
        assert "is not a time" in res.stderr and "1h30m" in res.stderr
        assert "selector" not in res.stderr  # the CLI's hint, not the server's
    bad = _piped(["export", "--since", "5 minutes", "-o", "unused.jsonl"], env)
    assert bad.returncode == 2 and "is not a time" in bad.stderr  # export checks the same way
    ok = _piped(["observe", "--since", "1h30m", "--until", "now", "-o", "jsonl", "--last", "1"], env)
    assert ok.returncode == 0, ok.stderr


def test_status_falls_back_to_l7scope_server(loaded_server: Loaded, tmp_path: object) -> None:
    env = _env(loaded_server, L7SCOPE_STATE_FILE=f"{tmp_path}/none.json")
    res = _piped(["status", "-o", "json"], env)
    assert loaded_server.server.url in res.stdout, res.stdout + res.stderr
    assert '"part": "server"' in res.stdout


def test_shell_completion_scripts_and_answers() -> None:
    for shell in ("bash", "zsh", "fish"):
        res = _piped([], {"_L7SCOPE_COMPLETE": f"{shell}_source"})
        assert res.returncode == 0 and "_L7SCOPE_COMPLETE" in res.stdout, (shell, res.stderr)
    res = _piped([], {"_L7SCOPE_COMPLETE": "bash_complete", "COMP_WORDS": "l7scope ob",
                      "COMP_CWORD": "1"})
    assert "observe" in res.stdout, res.stdout + res.stderr
    res = _piped([], {"_L7SCOPE_COMPLETE": "bash_complete", "COMP_WORDS": "l7scope observe --col",
                      "COMP_CWORD": "2"})
    assert "--color" in res.stdout
