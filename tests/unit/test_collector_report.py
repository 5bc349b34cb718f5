"""Report client: bounded buffer, backoff with jitter, retry of refused reports, real gRPC."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from collector_support import RecorderServer

from l7scope.collector.report import GrpcSender, Reporter, requests_in
from l7scope.contracts.policysync_pb2 import DataplaneStats, Statistic


def msg(port: int, n: int = 1) -> DataplaneStats:
    m = DataplaneStats(src_ip="10.0.0.1", dst_ip="10.96.0.1", src_port=port, dst_port=80)
    m.stats.append(Statistic(relativity=Statistic.DELTA, kind=Statistic.HTTP_DATA, value=n))
    return m


class FakeSend:
    """Scripted answers: True/False = ReportResult.successful, an exception = RPC error."""

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.sent: list[int] = []

    def __call__(self, m: DataplaneStats, timeout: float) -> bool:
        a = self.answers.pop(0) if self.answers else True
        if isinstance(a, Exception):
            raise a
        if a:
            self.sent.append(m.src_port)
        return bool(a)


def test_sends_in_order_and_counts() -> None:
    send = FakeSend([])
    r = Reporter(send)
    r.submit([msg(1, 3), msg(2, 4)])
    r.pump(0.0)
    assert send.sent == [1, 2] and r.buffered == 0
    assert (r.counters.reported, r.counters.reported_requests, r.counters.failed) == (2, 7, 0)


def test_rpc_error_backs_off_exponentially_with_jitter_and_never_drops() -> None:
    err = ConnectionError("agent away")
    send = FakeSend([err, err, err, err, True, True])
    r = Reporter(send, backoff_initial=1.0, backoff_max=5.0, rng=random.Random(1))
    r.submit([msg(1), msg(2)])
    now = 0.0
    delays = []
    for _ in range(4):
        nxt = r.pump(now)
        delays.append(nxt - now)
        assert r.pump(now + 0.01) == nxt  # too early: no attempt
        now = nxt
    r.pump(now)
    assert send.sent == [1, 2] and r.buffered == 0
    for d, base in zip(delays, (1.0, 2.0, 4.0, 5.0), strict=True):
        assert base * 0.5 <= d <= base
    c = r.counters
    assert (c.failed, c.rejected, c.retried, c.reported, c.dropped) == (4, 0, 1, 2, 0)


def test_refused_report_is_retried_not_dropped() -> None:
    send = FakeSend([False, True])
    r = Reporter(send, backoff_initial=0.5, rng=random.Random(2))
    r.submit([msg(1)])
    nxt = r.pump(10.0)
    assert r.buffered == 1 and 10.25 <= nxt <= 10.5
    r.pump(nxt)
    assert send.sent == [1] and r.counters.rejected == 1 and r.counters.retried == 1


def test_full_buffer_drops_oldest_and_counts_requests() -> None:
    r = Reporter(FakeSend([]), max_buffer=3)
    r.submit([msg(i, n=10) for i in range(5)])
    assert r.buffered == 3
    assert (r.counters.dropped, r.counters.dropped_requests) == (2, 20)
    assert r.buffered_requests() == 30
    assert r.drop_all() == 30 and r.counters.dropped_requests == 50


def test_requests_in() -> None:
    assert requests_in(msg(1, 42)) == 42


def test_real_grpc_server_down_then_up(tmp_path: Path) -> None:
    srv = RecorderServer(tmp_path / "socket")
    sender = GrpcSender(srv.target)
    r = Reporter(sender, timeout=1.0, backoff_initial=0.05, backoff_max=0.2)
    try:
        r.submit([msg(1, 2), msg(2, 3)])
        nxt = r.pump(0.0)  # no server yet: RPC error, kept
        assert r.buffered == 2 and r.counters.failed == 1 and nxt > 0
        srv.start()

        deadline = time.monotonic() + 10
        fake_now = 100.0
        while r.buffered and time.monotonic() < deadline:
            r.pump(fake_now)
            fake_now += 1.0  # the backoff (<= 0.2 s) has always passed
            time.sleep(0.05)
        assert r.buffered == 0
        assert srv.recorder.requests() == 5
        assert [m.src_port for m in srv.recorder.messages] == [1, 2]
        srv.recorder.successful = False
        r.submit([msg(3)])
        r.pump(fake_now + 100)
        assert r.buffered == 1 and r.counters.rejected == 1
    finally:
        sender.close()
        srv.stop()


@pytest.mark.parametrize("target", ["/x/socket", "unix:///x/socket"])
def test_dial_target_forms(target: str) -> None:
    from l7scope.collector.config import CollectorSettings

    assert CollectorSettings(dial_target=target).dial_target == "unix:///x/socket"
