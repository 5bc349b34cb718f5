"""`l7scope observe --follow` against a real server: records ingested while following appear
exactly once, in order, including records that share an end_time with ones already printed,
identical records ingested twice, late records, a second with more than one page of records, and
records ingested after the server restarted under the follower."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cli_support import L7SCOPE, Server, cli_env, dataset, start_server, stop

from l7scope.contracts.record import L7Record, to_dict


def canon(r: dict[str, Any]) -> bytes:
    return msgspec.json.encode(r, order="sorted")


class Follower:
    def __init__(self, srv: Server, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [L7SCOPE, "observe", "--follow", "-o", "jsonl", "--interval", "0.2", *extra],
            env=cli_env(srv.url, srv.token), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[dict[str, Any]] = []
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline().decode()  # "following records with end_time after T0"
        assert first.startswith("following records with end_time after "), first
        self.start = int(first.split()[5])
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.05)
        assert len(self.lines) >= n, f"got {len(self.lines)} of {n} records"

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self._t.join(5)
        return err.decode()


def at(recs: list[L7Record], end: int) -> list[L7Record]:
    return [msgspec.structs.replace(r, start_time=end - 5, end_time=end) for r in recs]


@pytest.mark.slow
def test_follow_prints_every_new_record_exactly_once_in_order(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    pool = dataset(0, n=3000, seed=11)
    follower: Follower | None = None
    try:
        # history before following starts is not printed
        srv.ingest(at(pool[:50], int(time.time()) - 5), "history")
        follower = Follower(srv)
        while int(time.time()) <= follower.start:  # records must end after the follower's start
            time.sleep(0.05)

        e1 = int(time.time())
        batch1 = at(pool[50:78], e1) + at([pool[78], pool[78]], e1)  # two identical records
        srv.ingest(batch1, "b1")
        follower.wait_for(30)

        time.sleep(1.1)
        e2 = int(time.time())
        # same second as batch 1 (already printed), an exact copy of a printed record, a new second
        batch2 = at(pool[100:120], e1) + at([pool[78]], e1) + at(pool[120:139], e2)
        srv.ingest(batch2, "b2")
        follower.wait_for(70)

        time.sleep(1.1)
        e3 = int(time.time())
        batch3 = at(pool[200:1700], e3)  # more than one page (1000) in one second
        late = at(pool[1700:1710], e2)  # late: an earlier second, ingested after newer ones
        srv.ingest(batch3, "b3")
        follower.wait_for(70 + len(batch3))
        srv.ingest(late, "b4")
        follower.wait_for(70 + len(batch3) + len(late))

        # the server restarts (same store): the follower waits, then goes on where it was
        stop(srv.proc)
        time.sleep(1.0)
        srv = start_server(tmp_path, port=int(srv.url.rsplit(":", 1)[1]))
        e5 = int(time.time())
        batch5 = at(pool[1800:1840], e5)
        srv.ingest(batch5, "b5")
        total = len(batch1) + len(batch2) + len(batch3) + len(late) + len(batch5)
        follower.wait_for(total)
        time.sleep(1.5)  # more polls: nothing may be printed twice
        err = follower.stop()
        got = follower.lines
        assert len(got) == total, err
        assert "retrying every" in err and "server answers again" in err

        segments = [batch1, batch2, batch3, late, batch5]
        start = 0
        for seg in segments:
            part = got[start:start + len(seg)]
            assert Counter(map(canon, part)) == Counter(canon(to_dict(r)) for r in seg)
            ends = [r["end_time"] for r in part]
            assert ends == sorted(ends)
            start += len(seg)
        assert "late" not in err and "Traceback" not in err
    finally:
        if follower is not None and follower.proc.poll() is None:
            follower.stop()
        stop(srv.proc)


@pytest.mark.slow
def test_records_later_than_the_window_are_counted_not_lost_silently(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    pool = dataset(0, n=20, seed=12)
    follower: Follower | None = None
    try:
        follower = Follower(srv, "--follow-window", "10")
        while int(time.time()) <= follower.start + 1:
            time.sleep(0.05)
        on_time = at(pool[:5], follower.start + 1)
        srv.ingest(on_time, "on-time")
        follower.wait_for(5)
        while int(time.time()) < follower.start + 14:  # second start+1 leaves the 10 s window
            time.sleep(0.1)
        srv.ingest(at(pool[5:8], follower.start + 1), "too-late")
        srv.ingest(at(pool[8:10], int(time.time())), "fresh")
        follower.wait_for(7)
        time.sleep(3.0)  # a late check runs every 10 polls (0.2 s apart)
        err = follower.stop()
        assert Counter(map(canon, follower.lines)) == Counter(
            canon(to_dict(r)) for r in on_time + at(pool[8:10], follower.lines[-1]["end_time"]))
        assert "3 records arrived more than --follow-window seconds after their end_time" in err, err
    finally:
        if follower is not None and follower.proc.poll() is None:
            follower.stop()
        stop(srv.proc)
