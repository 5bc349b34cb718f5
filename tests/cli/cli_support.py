"""Helpers of the CLI tests: a real `l7scope server` subprocess (free port, temporary data
directory) and a hand-built, deterministic data set loaded through the real bulk endpoint."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from l7scope.contracts.auth import TOKEN_ENV, TOKEN_FILE_NAME, bearer, read_token
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH
from l7scope.contracts.record import TYPE_UNLOGGED, L7Record, encode_records

L7SCOPE = str(Path(sys.executable).with_name("l7scope"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s ({last})")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    token_file: Path

    @property
    def token(self) -> str:
        return read_token(self.token_file)

    def ingest(self, records: list[L7Record], batch_id: str) -> int:
        r = httpx.post(self.url + BULK_PATH, content=encode_records(records),
                       headers={BATCH_ID_HEADER: batch_id, "Content-Type": "application/x-ndjson",
                                **bearer(self.token)},
                       timeout=30)
        r.raise_for_status()
        body = r.json()
        assert body["rejected_total"] == 0, body
        return int(body["accepted"])


def start_server(tmp: Path, port: int | None = None) -> Server:
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "server.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [L7SCOPE, "server", "--port", str(port), "--data-dir", str(tmp / "data")],
            stdout=f, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", proc, log, tmp / "data" / TOKEN_FILE_NAME)
    try:
        wait_http(srv.url + "/healthz")
    except BaseException:
        stop(proc)
        raise
    return srv


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the data set ------------------------------------------------------------------------------

#: (src_type, src_ns, src_name_aggr) -> (dest_ns, dest_service, dest_name_aggr, port, type)
EDGES = [
    (("wep", "frontend", "frontend-*"), ("shop", "cartservice", "cartservice-5c8d7f9b4-*", 7070, "HTTP/1.1")),
    (("wep", "frontend", "frontend-*"), ("shop", "checkout", "checkout-6b7d8c9f5-*", 5050, "HTTP/2")),
    (("wep", "shop", "checkout-6b7d8c9f5-*"), ("payments", "payment", "payment-7f6d5c4b9-*", 8080, "HTTP/1.1")),
    (("wep", "shop", "checkout-6b7d8c9f5-*"), ("shop", "cartservice", "cartservice-5c8d7f9b4-*", 7070, "HTTP/2")),
    (("net", "-", "pub"), ("frontend", "frontend", "frontend-*", 80, "HTTP/1.1")),
    (("wep", "shop", "cartservice-5c8d7f9b4-*"), ("shop", "redis", "redis-0", 6379, "tcp")),
    (("wep", "payments", "payment-7f6d5c4b9-*"), ("shop", "", "cartservice-5c8d7f9b4-*", 7070, "HTTP/1.1")),
]
PATHS = ["/cart", "/cart/add", "/checkout", "/product/42", "/api/v1/items", "/healthz", "/login"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
CODES = ["200", "200", "200", "201", "204", "301", "404", "500", "503"]


def dataset(base: int, n: int = 2400, seed: int = 7) -> list[L7Record]:
    """`n` records with end_time in (base, base + 600], every 5 s (many share an end_time)."""
    rnd = random.Random(seed)
    out: list[L7Record] = []
    for _ in range(n):
        end = base + 5 * rnd.randint(1, 120)
        host = rnd.choice(["node-a", "node-b"])
        if rnd.random() < 0.03:
            c = rnd.randint(1, 40)
            out.append(L7Record(start_time=end - 5, end_time=end, count=c, type=TYPE_UNLOGGED,
                                host=host, requests_seen=c))
            continue
        (st, sns, sname), (dns, svc, dname, port, typ) = rnd.choice(EDGES)
        count = rnd.randint(1, 30)
        mean = rnd.randint(200_000, 50_000_000)
        common = dict(start_time=end - 5, end_time=end, count=count, host=host,
                      src_type=st, src_namespace=sns, src_name_aggr=sname,
                      dest_type="wep", dest_namespace=dns, dest_name_aggr=dname, dest_port_num=port,
                      dest_service_name=svc, dest_service_namespace=dns if svc else "",
                      dest_service_port=port if svc else 0,
                      duration_mean=mean, duration_max=mean * 2, bytes_in=count * 100,
                      bytes_out=count * rnd.randint(100, 5000), type=typ)
        if typ == "tcp":
            out.append(L7Record(**common))  # type: ignore[arg-type]
            continue
        path = rnd.choice(PATHS)
        out.append(L7Record(**common, method=rnd.choice(METHODS),  # type: ignore[arg-type]
                            url=f"{svc or dname}.{dns}:{port}{path}",
                            response_code=rnd.choice(CODES), protocol=typ))
    # hostile text: a terminal escape sequence in the URL and the user agent
    out.append(L7Record(start_time=base + 595, end_time=base + 600, count=1, host="node-a",
                        src_type="net", src_namespace="-", src_name_aggr="pub",
                        dest_type="wep", dest_namespace="frontend", dest_name_aggr="frontend-*",
                        dest_service_name="frontend", dest_service_namespace="frontend",
                        dest_service_port=80, method="GET", response_code="400",
                        url="frontend.frontend:80/\x1b[31mred\x1b]0;pwned\x07", user_agent="x\x1b[2J",
                        type="HTTP/1.1"))
    return out


@dataclass
class Loaded:
    server: Server
    base: int
    records: list[dict[str, object]]

    def window(self) -> list[str]:
        return ["--since", str(self.base - 1), "--until", str(self.base + 601)]


def cli_env(url: str, token: str | None = None) -> dict[str, str]:
    env = {**os.environ, "L7SCOPE_SERVER": url, "COLUMNS": "120", "NO_COLOR": "1"}
    if token is not None:
        env[TOKEN_ENV] = token
    return env


def run_pty(args: list[str], env: dict[str, str], cols: int = 80, timeout: float = 60.0
            ) -> tuple[int, str]:
    """`l7scope ARGS` with its stdout and stderr on a real pseudo-terminal `cols` wide (python's
    pty module); returns the exit code and everything it wrote."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    full_env.update({"TERM": "xterm-256color", **env})
    proc = subprocess.Popen([L7SCOPE, *args], stdin=follower, stdout=follower, stderr=follower,
                            env=full_env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = proc.wait(timeout=10)
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
