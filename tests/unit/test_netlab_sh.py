"""netlab.sh.run: one-shot commands run in their own process group (a terminal's Ctrl-C must not
end an `ip netns del` halfway through a teardown) and say how they failed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from l7scope.netlab.sh import NetlabError, run


def test_a_command_runs_outside_the_callers_process_group() -> None:
    res = run(["sh", "-c", "ps -o pgid= -p $$"])
    assert int(res.stdout) != os.getpgrp()


def test_a_signal_to_the_callers_group_does_not_reach_the_command() -> None:
    # a caller in a session of its own (its group holds only itself, never this test's runner)
    # catches the signal (a handler, unlike SIG_IGN, is not inherited) and runs a command that
    # signals the caller's whole group: the command must survive it, as an `ip netns del` must
    # survive a Ctrl-C during a teardown
    script = (
        "import os, signal, sys\n"
        "from l7scope.netlab.sh import run\n"
        "signal.signal(signal.SIGUSR1, lambda *_: None)\n"
        "res = run(['sh', '-c', f'kill -USR1 -{os.getpgrp()}; sleep 0.2; echo survived'])\n"
        "sys.stdout.write(res.stdout)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, check=False, start_new_session=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "survived"


def test_a_command_ended_by_a_signal_says_so() -> None:
    with pytest.raises(NetlabError, match=r"killed by signal 15"):
        run(["sh", "-c", "kill -TERM $$"])
    res = run(["sh", "-c", "echo oops >&2; exit 3"], check=False)
    assert res.returncode == 3
    with pytest.raises(NetlabError, match=r"exit status 3\): oops"):
        run(["sh", "-c", "echo oops >&2; exit 3"])
