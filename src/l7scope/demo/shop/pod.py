"""One shop pod: `python -m l7scope.demo.shop.pod --service NAME ...`.

Serves the named Service on `--listen:--port` (gRPC for the backends, HTTP/1.1 for frontend, the
Redis subset for redis-cart), dials its peers at the addresses given with `--peer`, counts its
outgoing calls into `--counts-dir/<service>.json`, and touches `--ready-file` once it listens.
SIGTERM/SIGINT: stop accepting, let calls in flight finish (a few seconds), write the counts, exit.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from l7scope.demo.shop import backends, catalog
from l7scope.demo.shop.clients import Backend
from l7scope.demo.shop.counts import CallCounts, CountsWriter
from l7scope.demo.shop.frontend import FrontendServer, Shop
from l7scope.demo.shop.redis_cart import RedisClient, RedisServer


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m l7scope.demo.shop.pod", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service", required=True, choices=sorted(catalog.BY_NAME))
    ap.add_argument("--listen", default="0.0.0.0", help="address to listen on")
    ap.add_argument("--port", type=int, help="port (default: the Service's target port)")
    ap.add_argument("--peer", action="append", default=[], metavar="NAME=IP:PORT",
                    help="where to dial a peer Service (its VIP:port); repeat per peer")
    ap.add_argument("--counts-dir", type=Path, required=True)
    ap.add_argument("--ready-file", type=Path)
    ap.add_argument("--source-ip", help="connect from this address (--no-netns fallback)")
    ap.add_argument("--relay-dir", type=Path, help="unix sockets of the source-address relay")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workers", type=int, default=8, help="gRPC server threads")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    svc = catalog.BY_NAME[args.service]
    port = args.port or svc.target_port
    rng = random.Random(args.seed)
    counts = CallCounts(svc.name)
    writer = CountsWriter(counts, args.counts_dir)
    peers_addr = dict(p.split("=", 1) for p in args.peer)
    missing = [c for c in svc.calls if c not in peers_addr]
    if missing:
        print(f"{svc.name}: missing --peer for {', '.join(missing)}", file=sys.stderr)
        return 2

    peers: dict[str, Backend] = {}
    for name in svc.calls:
        if name in backends.STUBS:
            peers[name] = Backend(name, _addr(peers_addr[name]), catalog.BY_NAME[name].port,
                                  counts, backends.STUBS[name], source_ip=args.source_ip,
                                  relay_dir=args.relay_dir)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    shutdown: list[object] = []
    if svc.name == "redis-cart":
        redis = RedisServer((args.listen, port))
        threading.Thread(target=redis.serve_forever, daemon=True).start()
        shutdown.append(redis)
    elif svc.name == "frontend":
        web = FrontendServer((args.listen, port), Shop(peers))
        web.serve_in_thread()
        shutdown.append(web)
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                             options=[("grpc.so_reuseport", 0)])
        factory, register = backends.SERVICERS[svc.name]
        if svc.name == "cartservice":
            servicer = factory(peers, rng, RedisClient(_addr(peers_addr["redis-cart"]),
                                                       source_ip=args.source_ip), counts)
        else:
            servicer = factory(peers, rng)
        register(servicer, server)
        if server.add_insecure_port(f"{args.listen}:{port}") == 0:
            print(f"{svc.name}: cannot listen on {args.listen}:{port}", file=sys.stderr)
            return 1
        server.start()
        shutdown.append(server)

    if args.ready_file:
        args.ready_file.write_text("ready\n")
    stop.wait()

    for s in shutdown:
        if isinstance(s, grpc.Server):
            s.stop(grace=5).wait(6)
        elif isinstance(s, (RedisServer, FrontendServer)):
            s.shutdown()
            s.server_close()
    for b in peers.values():
        b.close()
    writer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
