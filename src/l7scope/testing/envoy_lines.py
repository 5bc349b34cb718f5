"""Envoy-shaped synthetic access-log lines, for tests, benchmarks and `collector replay` fixtures.

Lines have the keys of `contracts.envoy_log` with realistic values (~450 bytes each). They are
deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

from l7scope.contracts.envoy_log import REPORTER_DESTINATION, EnvoyLogLine, encode_line

# (method, path, status) of the requests a client makes; `{}` takes one of `paths` values.
_ROUTES = (("GET", "/api/v1/cart", 200), ("GET", "/api/v1/products/{}", 200),
           ("GET", "/api/v1/products/{}", 404), ("POST", "/api/v1/checkout", 201),
           ("POST", "/api/v1/checkout", 503), ("GET", "/healthz", 200),
           ("GET", "/static/img/{}.png", 200), ("PUT", "/api/v1/users/{}/cart", 204),
           ("DELETE", "/api/v1/cart/{}", 500))
_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "curl/7.88.1",
           "python-httpx/0.28.1", "Go-http-client/1.1")


def line(rng: random.Random, *, connections: int = 300, paths: int = 2,
         t0: float = 1_790_000_000.0, i: int = 0) -> EnvoyLogLine:
    """One request line; `connections` client tuples, `paths` distinct path values per pattern."""
    c = rng.randrange(connections)
    dur = rng.randrange(0, 40)
    method, path, code = rng.choice(_ROUTES)
    ms = int(t0 * 1000) + i
    stamp = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return EnvoyLogLine(
        reporter=REPORTER_DESTINATION,
        start_time=stamp,
        duration=dur,
        duration_us=dur * 1000 + rng.randrange(1000),
        response_code=code,
        response_flags="-" if code < 500 else "UF",
        bytes_sent=rng.randrange(0, 20000),
        bytes_received=rng.randrange(0, 2000),
        user_agent=_AGENTS[c % len(_AGENTS)],
        request_path=path.format(rng.randrange(paths)),
        request_method=method,
        request_id=f"{rng.getrandbits(128):032x}",
        protocol="HTTP/1.1",
        type="HTTP/1.1",
        downstream_remote_address=f"10.244.{c % 7}.{c % 250 + 2}:{40000 + c}",
        downstream_local_address=f"10.96.0.{10 + c % 5}:80",
        domain=f"svc{c % 5}.shop.svc.cluster.local",
        upstream_host=f"10.244.9.{c % 5 + 2}:8080",
        upstream_local_address=f"10.244.{c % 7}.{c % 250 + 2}:{50000 + c}",
        upstream_service_time=str(max(dur - 1, 0)),
    )


def lines(n: int, *, seed: int = 1, connections: int = 300, paths: int = 2) -> Iterator[bytes]:
    """`n` encoded lines (without newline)."""
    rng = random.Random(seed)
    for i in range(n):
        yield encode_line(line(rng, connections=connections, paths=paths, i=i))
