"""The demo's load generator: virtual shoppers browsing the shop's `frontend`, and the exact
count of what they (and the services they set off) sent.

`python -m l7scope.demo.loadgen --target IP:PORT --rate R --counts-dir DIR`

Shoppers do what Online Boutique's load generator does, with its weights: open the home page
(1), change currency (2), browse a product (10), add to cart (2), view the cart (3), check out
(1: add to cart, then check out), plus the odd link to a product that does not exist (404).
`--rate` is HTTP requests per second to the frontend, spread over `--users` keep-alive
connections; each shopper keeps its session cookie.

Counting (see docs/demo.md): a request counts as completed once an HTTP response came back, and
as failed when the connection broke before one did. The counts go to
`<counts-dir>/loadgenerator.json` like every shop pod's own outgoing calls;
`l7scope.demo.shop.counts.read_totals()` sums them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from l7scope.demo.shop import catalog
from l7scope.demo.shop.counts import CallCounts, CountsWriter

USER_AGENT = "boutique-loadgen/1.0 (l7scope demo)"


class Pacer:
    """Hands out send times at `rate` per second; `take()` returns None once stopped, or once
    `limit` send times were handed out (a fixed number of requests: every time handed out is
    still waited for and used, `stopped` is not set by the limit)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 limit: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1")
        self._interval = 1.0 / rate
        self._clock = clock
        self._next = clock()
        self._lock = threading.Lock()
        self._left = limit
        self.stopped = threading.Event()

    def take(self) -> float | None:
        if self.stopped.is_set():
            return None
        with self._lock:
            if self._left is not None:
                if self._left == 0:
                    return None
                self._left -= 1
            now = self._clock()
            # after a stall, do not burst to catch up more than one second of requests
            self._next = max(self._next, now - 1.0)
            t = self._next
            self._next += self._interval
        return t

    def wait(self) -> bool:
        """Sleep until the next send time; False when stopped."""
        t = self.take()
        if t is None:
            return False
        delay = t - self._clock()
        if delay > 0:
            return not self.stopped.wait(delay)
        return True


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    form: dict[str, str] | None = None


#: (weight, name) -> the request steps of one shopper action.
def actions(rng: random.Random) -> list[tuple[float, Callable[[], list[Step]]]]:
    def product() -> str:
        return rng.choice(catalog.PRODUCT_IDS)

    def add() -> Step:
        return Step("POST", "/cart", {"product_id": product(),
                                      "quantity": str(rng.choice([1, 2, 3, 4, 5, 10]))})

    return [
        (1.0, lambda: [Step("GET", "/")]),
        (2.0, lambda: [Step("POST", "/setCurrency",
                            {"currency_code": rng.choice(catalog.CURRENCIES)})]),
        (10.0, lambda: [Step("GET", f"/product/{product()}")]),
        (2.0, lambda: [add()]),
        (3.0, lambda: [Step("GET", "/cart")]),
        (1.0, lambda: [add(), Step("POST", "/cart/checkout", {"email": "someone@example.com"})]),
        (0.3, lambda: [Step("GET", f"/product/{rng.choice(['NOSUCHITEM', 'ABC123', 'x'])}")]),
    ]


class Shopper:
    """One virtual user: a keep-alive connection, a cookie jar, counted requests."""

    def __init__(self, target: tuple[str, int], host: str, counts: CallCounts,
                 source_ip: str | None = None, timeout_s: float = 30.0) -> None:
        self._target = target
        self._host = host
        self._counts = counts
        self._source = (source_ip, 0) if source_ip else None
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self.cookies: dict[str, str] = {}
        self.statuses: dict[int, int] = {}

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._target, timeout=self._timeout,
                                                    source_address=self._source)
        return self._conn

    def request(self, step: Step) -> int | None:
        headers = {"Host": self._host, "User-Agent": USER_AGENT, "Accept": "text/html"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if step.form is not None:
            body = urlencode(step.form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = self._connection()
        try:
            conn.request(step.method, step.path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            self._counts.failed("frontend")
            return None
        self._counts.completed("frontend")
        self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
        for value in resp.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value)
            except Exception:  # a cookie we cannot parse is skipped
                continue
            for k, morsel in jar.items():
                self.cookies[k] = morsel.value
        if resp.will_close:
            self.close()
        return resp.status

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class LoadGenerator:
    def __init__(self, target: tuple[str, int], host: str, rate: float, users: int,
                 counts: CallCounts, seed: int | None = None,
                 source_ip: str | None = None, requests: int | None = None) -> None:
        self.pacer = Pacer(rate, limit=requests)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._actions = actions(self._rng)
        self._shoppers = [Shopper(target, host, counts, source_ip) for _ in range(users)]
        self._threads = [threading.Thread(target=self._run, args=(s,), name=f"shopper-{i}",
                                          daemon=True) for i, s in enumerate(self._shoppers)]

    def _pick(self) -> list[Step]:
        with self._rng_lock:
            weights = [w for w, _ in self._actions]
            _, make = self._rng.choices(self._actions, weights=weights)[0]
            return make()

    def _run(self, shopper: Shopper) -> None:
        while True:
            for step in self._pick():
                if not self.pacer.wait():
                    shopper.close()
                    return
                shopper.request(step)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 40.0) -> None:
        """Stop sending; wait for requests in flight to finish."""
        self.pacer.stopped.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def running(self) -> bool:
        """Some shopper still sends (False once a `requests` limit is used up and answered)."""
        return any(t.is_alive() for t in self._threads)

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in self._shoppers:
            for code, n in s.statuses.items():
                out[code] = out.get(code, 0) + n
        return out


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l7scope.demo.loadgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="frontend VIP:port")
    ap.add_argument("--host", default="frontend", help="Host header")
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second")
    ap.add_argument("--users", type=int, default=4, help="concurrent shoppers")
    ap.add_argument("--duration", type=float, default=0, help="seconds; 0 = until SIGTERM")
    ap.add_argument("--requests", type=int, default=None,
                    help="send this many requests to the frontend, then exit (a multi-step "
                         "shopper action may be cut short at the limit)")
    ap.add_argument("--counts-dir", type=Path, required=True)
    ap.add_argument("--ready-file", type=Path)
    ap.add_argument("--source-ip", help="connect from this address (--no-netns fallback)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)

    counts = CallCounts(catalog.LOADGEN)
    writer = CountsWriter(counts, args.counts_dir)
    gen = LoadGenerator(_addr(args.target), args.host, args.rate, args.users, counts,
                        seed=args.seed, source_ip=args.source_ip, requests=args.requests)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    gen.start()
    if args.ready_file:
        args.ready_file.write_text("ready\n")
    deadline = time.monotonic() + args.duration if args.duration else None
    # until a signal, the duration, or (with --requests) the last request was answered
    while not stop.wait(0.2) and gen.running():
        if deadline is not None and time.monotonic() >= deadline:
            break
    gen.stop()
    writer.stop()
    print(json.dumps({"statuses": gen.statuses(), **counts.snapshot()[1]}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
