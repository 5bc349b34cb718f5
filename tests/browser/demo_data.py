"""Records shaped like `l7scope demo`'s: the shop's eleven Services and the load generator in the
one namespace `default` (l7scope.demo.shop.catalog), each caller's pod aggregated as
`<name>-<hash>-*` as the node agent does. Deterministic for a given `now`."""

from __future__ import annotations

import random
import zlib

from browser_data import _record

from l7scope.contracts.record import L7Record
from l7scope.demo import topology
from l7scope.demo.shop import catalog


def _wep(name: str) -> str:
    return f"{name}-{zlib.crc32(name.encode()) % 0xfffff:05x}-*"


def demo_records(now: int, seed: int = 11) -> list[L7Record]:
    """Every (caller, callee) pair of the shop, ~3 % errors, spread over the last 10 minutes."""
    rnd = random.Random(seed)
    ns = topology.NAMESPACE
    out: list[L7Record] = []
    for src, dst in sorted(catalog.edges()):
        svc = catalog.BY_NAME[dst]
        for _ in range(12):
            code = "503" if rnd.random() < 0.03 else "200"
            out.append(_record(rnd, now - 5 - rnd.randrange(600), (ns, _wep(src)),
                               (ns, dst, _wep(dst), svc.port), "POST" if svc.port_name == "grpc" else "GET",
                               f"{dst}:{svc.port}/", code, rnd.randint(1, 30)))
    return out
