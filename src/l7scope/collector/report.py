"""Policy Sync client: send each DataplaneStats with a unary `Report()`, never give up.

`Reporter` is the pure part: a bounded buffer (oldest messages dropped and counted when full),
exponential backoff with jitter after an RPC error or `successful=false`, and counters. The
caller injects the clock (`pump(now)`), the random source and the `send` function; the real
`GrpcSender` dials the node agent's unix socket (`contracts.policysync.dial_target`). Unlike
Calico's l7-collector, an RPC error never ends the process and a refused message is retried.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from l7scope.contracts.policysync_pb2 import DataplaneStats
from l7scope.contracts.policysync_pb2_grpc import PolicySyncStub

log = logging.getLogger(__name__)

#: send(message, timeout_seconds) -> the ReportResult's `successful`; raises on an RPC error.
Send = Callable[[DataplaneStats, float], bool]


def requests_in(msg: DataplaneStats) -> int:
    """Requests a message accounts for (its HTTP_DATA statistic)."""
    return sum(s.value for s in msg.stats)


@dataclass
class ReportCounters:
    reported: int = 0  # messages the node agent accepted
    reported_requests: int = 0
    failed: int = 0  # attempts that failed (RPC error or successful=false)
    rejected: int = 0  # of those, successful=false answers
    retried: int = 0  # messages accepted after at least one failed attempt
    dropped: int = 0  # messages dropped because the buffer was full
    dropped_requests: int = 0


class Reporter:
    def __init__(self, send: Send, *, max_buffer: int = 100_000, timeout: float = 5.0,
                 backoff_initial: float = 0.2, backoff_max: float = 10.0,
                 rng: random.Random | None = None) -> None:
        self._send = send
        self.max_buffer = max(max_buffer, 1)
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._buf: deque[DataplaneStats] = deque()
        self._lock = threading.Lock()
        self._failures = 0  # consecutive
        self._head_failed = False
        self.next_attempt = 0.0
        self.counters = ReportCounters()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def buffered_requests(self) -> int:
        with self._lock:
            return sum(map(requests_in, self._buf))

    def submit(self, messages: Iterable[DataplaneStats]) -> None:
        with self._lock:
            buf = self._buf
            for m in messages:
                if len(buf) >= self.max_buffer:
                    old = buf.popleft()
                    self.counters.dropped += 1
                    self.counters.dropped_requests += requests_in(old)
                    if self.counters.dropped == 1 or self.counters.dropped % 1000 == 0:
                        log.warning("report buffer full (%d): dropped %d messages so far",
                                    self.max_buffer, self.counters.dropped)
                buf.append(m)

    def backoff(self) -> float:
        """Delay after the current run of failures: exponential, with jitter in [0.5, 1]."""
        exp = 2.0 ** max(self._failures - 1, 0)
        base: float = min(self.backoff_initial * exp, self.backoff_max)
        return base * (0.5 + 0.5 * self._rng.random())

    def pump(self, now: float) -> float:
        """Send buffered messages until one fails; returns when to call again."""
        if now < self.next_attempt:
            return self.next_attempt
        while True:
            with self._lock:
                if not self._buf:
                    return now + 3600.0
                msg = self._buf[0]
            ok = False
            try:
                ok = self._send(msg, self.timeout)
                if not ok:
                    self.counters.rejected += 1
            except Exception as e:  # an RPC error: keep the message, retry later
                if self._failures == 0:
                    log.warning("Report() failed, will retry with backoff: %s", _short(e))
            if not ok:
                self._failures += 1
                self._head_failed = True
                self.counters.failed += 1
                self.next_attempt = now + self.backoff()
                return self.next_attempt
            with self._lock:
                if self._buf and self._buf[0] is msg:
                    self._buf.popleft()
            if self._failures:
                log.info("Report() works again after %d failed attempts", self._failures)
            self._failures = 0
            self.counters.reported += 1
            self.counters.reported_requests += requests_in(msg)
            if self._head_failed:
                self.counters.retried += 1
                self._head_failed = False

    def drop_all(self) -> int:
        """Give up on everything still buffered (at exit); returns the requests dropped."""
        with self._lock:
            n = sum(map(requests_in, self._buf))
            self.counters.dropped += len(self._buf)
            self.counters.dropped_requests += n
            self._buf.clear()
        return n


def _short(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError):
        code: Any = e.code() if hasattr(e, "code") else None
        details: Any = e.details() if hasattr(e, "details") else ""
        return f"{code}: {details}"
    return repr(e)


class GrpcSender:
    """Unary `felix.PolicySync/Report` over a gRPC channel (usually `unix:///.../socket`)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        self._stub = PolicySyncStub(self._channel)

    def __call__(self, msg: DataplaneStats, timeout: float) -> bool:
        return bool(self._stub.Report(msg, timeout=timeout).successful)

    def close(self) -> None:
        self._channel.close()
