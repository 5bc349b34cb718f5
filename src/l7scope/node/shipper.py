"""Ship records to the server's bulk endpoint through a bounded on-disk spool.

Every batch is written to the spool directory (temp file, fsync, rename) BEFORE it is sent, and
deleted only after a 2xx answer; batches left over from a previous run are sent first on start.
Each batch keeps one identifier (in its file name) across retries and restarts; the server drops a
batch id it has already stored (`contracts.bulk`), so re-sending after a crash is safe: nothing
lost, nothing counted twice.

Failures: connection errors, 401/403 (a credential problem of the installation, not of the
batch), 408, 429 and 5xx are retried with exponential backoff and jitter (httpx); any other 4xx
is permanent (the batch is dropped and counted). Batches go over one kept-alive connection; after
a failure the retry opens a new one (through a Service: possibly to another server replica), and
so does the first batch after the connection is `reconnect_seconds` old (default 60 s): kube-proxy
balances connections, not requests, so without it a node would keep shipping to one replica
forever, and replicas added later would get nothing from the nodes already running. The spool is bounded
(`max_bytes`): when full, the oldest batches not being sent are dropped and their records counted.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from l7scope.contracts import bulk
from l7scope.contracts.auth import TokenFileError, bearer, read_token
from l7scope.contracts.record import L7Record, encode_records

log = logging.getLogger(__name__)

MAX_RECORDS_PER_BATCH = 5000


@dataclass
class ShipperStats:
    batches_spooled: int = 0
    records_spooled: int = 0
    batches_shipped: int = 0
    records_shipped: int = 0
    records_rejected: int = 0
    batches_duplicate: int = 0
    records_dropped: int = 0
    batches_dropped: int = 0
    send_errors: int = 0
    spool_batches: int = 0
    spool_bytes: int = 0
    last_error: str = ""


class Spool:
    """Batches on disk, named `<seq>-<records>-<batch id>.ndjson`, oldest first."""

    def __init__(self, directory: str | Path, max_bytes: int, stats: ShipperStats,
                 node_name: str = "node") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.stats = stats
        self.node_name = node_name
        self.in_flight: Path | None = None
        self._lock = threading.Lock()
        for tmp in self.directory.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
        files = self._files()
        self._seq = (int(files[-1].name.split("-", 1)[0]) + 1) if files else 1
        self._refresh()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.ndjson") if p.name[0].isdigit())

    def _refresh(self) -> None:
        files = self._files()
        self.stats.spool_batches = len(files)
        self.stats.spool_bytes = sum(_size(p) for p in files)

    @staticmethod
    def records_in(path: Path) -> int:
        try:
            return int(path.name.split("-", 2)[1])
        except (IndexError, ValueError):
            return 0

    @staticmethod
    def batch_id(path: Path) -> str:
        return path.name.split("-", 2)[2].removesuffix(".ndjson")

    def put(self, body: bytes, records: int) -> Path:
        with self._lock:
            bid = f"{self.node_name[:100]}.{uuid.uuid4().hex}"
            final = self.directory / f"{self._seq:012d}-{records}-{bid}.ndjson"
            self._seq += 1
            tmp = self.directory / f".tmp-{final.name}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.rename(final)
            self.stats.batches_spooled += 1
            self.stats.records_spooled += records
            self._evict()
            self._refresh()
            return final

    def _evict(self) -> None:
        files = self._files()
        total = sum(_size(p) for p in files)
        for p in files[:-1]:  # never the batch just written
            if total <= self.max_bytes:
                break
            if p == self.in_flight:
                continue
            total -= _size(p)
            p.unlink(missing_ok=True)
            self.stats.batches_dropped += 1
            self.stats.records_dropped += self.records_in(p)
            log.warning("spool full (%d bytes): dropped batch %s", self.max_bytes, p.name)

    def oldest(self) -> Path | None:
        with self._lock:
            files = self._files()
            self.in_flight = files[0] if files else None
            return self.in_flight

    def done(self, path: Path) -> None:
        with self._lock:
            path.unlink(missing_ok=True)
            if self.in_flight == path:
                self.in_flight = None
            self._refresh()


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


class TokenSource:
    """The bearer token for shipping, re-read when its file changes (projected ServiceAccount
    tokens are rotated by the kubelet); no file, no header."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None
        self._token: str | None = None

    def headers(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
        except OSError as e:
            raise TokenFileError(f"no token file at {self.path}: {e.strerror}") from None
        if self._seen != (st.st_mtime, st.st_size) or self._token is None:
            self._token = read_token(self.path)
            self._seen = (st.st_mtime, st.st_size)
        return bearer(self._token)


class Shipper:
    """Background thread sending spooled batches, oldest first."""

    def __init__(self, server_url: str | None, spool_dir: str | Path, node_name: str,
                 max_spool_bytes: int = 512 * 1024 * 1024, timeout: float = 10.0,
                 backoff_base: float = 0.1, backoff_cap: float = 5.0,
                 rng: Callable[[], float] = random.random, token_file: Path | None = None,
                 verify: ssl.SSLContext | bool = True, reconnect_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = ShipperStats()
        self.reconnect_seconds, self._clock = reconnect_seconds, clock
        self.token = TokenSource(token_file)
        self.verify = verify  # how an https server's certificate is checked
        self.url = server_url.rstrip("/") + bulk.BULK_PATH if server_url else None
        # no server, no spool: records then only go to l7.log
        self.spool = Spool(spool_dir, max_spool_bytes, self.stats, node_name) if self.url else None
        self.timeout = timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._rng = rng
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt = 0
        self._decoder = msgspec.json.Decoder(bulk.BulkResult)

    def submit(self, records: list[L7Record]) -> None:
        """Spool records (in batches of at most MAX_RECORDS_PER_BATCH) and wake the sender."""
        if self.spool is None:
            return
        for i in range(0, len(records), MAX_RECORDS_PER_BATCH):
            chunk = records[i: i + MAX_RECORDS_PER_BATCH]
            self.spool.put(encode_records(chunk), len(chunk))
        self._wake.set()

    def backoff(self, attempt: int) -> float:
        """Delay before retry `attempt` (1-based): exponential, capped, with jitter (half..full)."""
        delay = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return float(delay / 2 + self._rng() * delay / 2)

    def start(self) -> None:
        if self.url is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="l7scope-shipper", daemon=True)
        self._thread.start()

    def stop(self, drain_seconds: float = 2.0) -> None:
        """Try to send what is spooled for up to drain_seconds; the rest stays for the next run."""
        if self._thread is None:
            return
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and self.stats.spool_batches and self._attempt == 0:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.timeout + 1)
        self._thread = None

    def _run(self) -> None:
        assert self.spool is not None
        client = httpx.Client(timeout=self.timeout, verify=self.verify)
        opened = self._clock()
        try:
            while not self._stop.is_set():
                path = self.spool.oldest()
                if path is None:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                if self._clock() - opened >= self.reconnect_seconds:
                    # spread the node's shipments over the replicas behind the Service
                    client.close()
                    client, opened = httpx.Client(timeout=self.timeout, verify=self.verify), self._clock()
                if self.send_one(client, path):
                    self._attempt = 0
                else:
                    self._attempt += 1
                    # Retry on a new connection: behind a Service, kube-proxy balances
                    # connections, so the retry can reach another server replica instead of
                    # the kept-alive connection to the one that failed.
                    client.close()
                    client, opened = httpx.Client(timeout=self.timeout, verify=self.verify), self._clock()
                    self._stop.wait(self.backoff(self._attempt))
        finally:
            client.close()

    def send_one(self, client: httpx.Client, path: Path) -> bool:
        """Send one spooled batch; True when it is settled (stored, duplicate or permanently bad)."""
        assert self.url is not None and self.spool is not None
        try:
            body = path.read_bytes()
        except OSError:
            self.spool.done(path)  # evicted meanwhile
            return True
        records = self.spool.records_in(path)
        headers = {bulk.BATCH_ID_HEADER: self.spool.batch_id(path), "Content-Type": bulk.CONTENT_TYPE}
        try:
            headers.update(self.token.headers())
        except TokenFileError as e:
            self._failed(str(e))  # kept in the spool until the token is there
            return False
        try:
            resp = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            self._failed(f"{type(e).__name__}: {e}")
            return False
        if resp.status_code in (401, 403):
            # a credential problem is the installation's, not the batch's: keep it and retry
            self._failed(f"HTTP {resp.status_code} (credential refused; check --server-token-file)")
            return False
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            self._failed(f"HTTP {resp.status_code}")
            return False
        if 200 <= resp.status_code < 300:
            try:
                result = self._decoder.decode(resp.content)
            except (msgspec.DecodeError, msgspec.ValidationError):
                result = bulk.BulkResult(accepted=records, rejected=[])
            rejected = result.rejected_count()
            if result.duplicate:
                self.stats.batches_duplicate += 1
            else:
                self.stats.records_shipped += result.accepted
                self.stats.records_rejected += rejected
                if result.rejected:
                    log.warning("server rejected %d records of batch %s, first: line %d: %s",
                                len(result.rejected), path.name, result.rejected[0].line,
                                result.rejected[0].error)
            self.stats.batches_shipped += 1
        else:
            self.stats.batches_dropped += 1
            self.stats.records_dropped += records
            log.error("server refused batch %s (HTTP %d: %s); dropped %d records",
                      path.name, resp.status_code, resp.text[:200], records)
        if self.stats.last_error:
            log.info("shipping to %s works again", self.url)
            self.stats.last_error = ""
        self.spool.done(path)
        return True

    def _failed(self, why: str) -> None:
        self.stats.send_errors += 1
        if not self.stats.last_error:
            log.warning("cannot ship to %s (%s); spooling and retrying", self.url, why)
        self.stats.last_error = why
