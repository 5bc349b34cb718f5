"""HTTPS on the real `l7scope server` (--tls-cert/--tls-key): clients that trust the CA
(observe --ca-file, $L7SCOPE_CA_FILE, the node agent's shipper) get answers; clients that do not
are refused by their own certificate check, so the token never travels to an unverified server."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from contract.harness import free_port

from l7scope.contracts.auth import CA_FILE_ENV, TOKEN_ENV, bearer, read_token, tls_verify
from l7scope.contracts.record import L7Record, encode_records
from l7scope.node.shipper import Shipper

L7SCOPE = str(Path(sys.executable).parent / "l7scope")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl, no network)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=l7scope-server",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    return d / "ca.crt", d / "server.crt", d / "server.key"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    ca, cert, key = make_ca_and_cert(tmp_path)
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen([L7SCOPE, "server", "--port", str(port), "--data-dir", str(data),
                             "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    verify = tls_verify(ca)
    deadline = time.monotonic() + 30
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(url + "/healthz", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the https server did not start"
                time.sleep(0.1)
        yield url, ca, data / "token"
    finally:
        proc.terminate()
        proc.wait(15)


def test_https_for_clients_that_trust_the_ca(tls_server: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, ca, token_file = tls_server
    auth = bearer(read_token(token_file))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/api/v1/status", headers=auth)  # the system's CAs do not know ours
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url.replace("https", "http") + "/healthz")  # no plain http on that port
    ctx = tls_verify(ca)
    assert isinstance(ctx, ssl.SSLContext)
    assert httpx.get(url + "/api/v1/status", headers=auth, verify=ctx).status_code == 200

    shipper = Shipper(url, tmp_path / "spool", "node-1", token_file=token_file, verify=ctx)
    assert shipper.spool is not None
    now = int(time.time())
    shipper.spool.put(encode_records([L7Record(start_time=now - 5, end_time=now, count=3)]), 1)
    with httpx.Client(verify=ctx, timeout=30) as client:
        path = shipper.spool.oldest()
        assert path is not None and shipper.send_one(client, path)
    assert shipper.stats.records_shipped == 1

    env = {**os.environ, "L7SCOPE_SERVER": url, TOKEN_ENV: read_token(token_file)}
    env.pop(CA_FILE_ENV, None)
    res = subprocess.run([L7SCOPE, "observe", "--since", "1h", "-o", "jsonl"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in res.stderr
    for extra, e in ((["--ca-file", str(ca)], env), ([], {**env, CA_FILE_ENV: str(ca)})):
        res = subprocess.run([L7SCOPE, "observe", "--since", "1h", "-o", "jsonl", *extra], env=e,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.splitlines()) == 1


def test_tls_cert_without_key_is_a_usage_error(tmp_path: Path) -> None:
    ca, cert, _ = make_ca_and_cert(tmp_path)
    res = subprocess.run([L7SCOPE, "server", "--port", str(free_port()), "--data-dir", str(tmp_path),
                          "--tls-cert", str(cert)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--tls-cert and --tls-key go together" in res.stderr
