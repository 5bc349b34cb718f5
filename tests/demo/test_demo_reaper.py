"""demo/reaper.py against real processes: marked children are found and killed; a stale
marker matches only a gone demo of the same prefix."""

from __future__ import annotations

import os
import subprocess
import sys

from l7scope.demo import reaper


def _sleeper(marker: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != reaper.MARKER_ENV}
    if marker is not None:
        env[reaper.MARKER_ENV] = marker
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                            start_new_session=True)


def test_reap_kills_only_the_runs_marked_processes() -> None:
    rid = f"reaptest{os.getpid()}:{os.getpid()}"
    mine, other, plain = _sleeper(rid), _sleeper(f"reaptest{os.getpid()}x:1"), _sleeper(None)
    try:
        assert reaper.marked(lambda v: v == rid) == [mine.pid]
        assert reaper.reap(rid) == [mine.pid]
        assert mine.wait(5) == -9
        assert other.poll() is None and plain.poll() is None
        assert reaper.marked(lambda v: v == rid) == []
    finally:
        for p in (mine, other, plain):
            p.kill()
            p.wait()


def test_stale_match() -> None:
    match = reaper.stale_match("demo", alive=lambda pid: pid == 42)
    assert match("demo:7")  # its demo process is gone
    assert not match("demo:42")  # still running
    assert not match(reaper.run_id("demo"))  # ourselves
    assert not match("other:7") and not match("demo-x:7") and not match("demo:abc")
