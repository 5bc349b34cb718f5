"""Start real ClickHouse servers (Debian's clickhouse-server, 18.16 here) for tests: private
config, data dirs and free ports under a temp dir; every server lists a two-shard cluster over
all started servers. Used by the contract suite; stops its processes even on failure."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BINARY_CANDIDATES = ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server")
CLUSTER = "l7test_2shards"


def binary() -> str | None:
    for p in BINARY_CANDIDATES:
        if Path(p).exists():
            return p
    return shutil.which("clickhouse-server")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    tcp_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    root: Path

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/default"


_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks>{networks}</networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


def _config(root: Path, tcp: int, http: int, inter: int, shards: list[int],
            listen: tuple[str, ...]) -> str:
    shard_xml = "".join(
        f"<shard><replica><host>127.0.0.1</host><port>{p}</port></replica></shard>" for p in shards
    )
    return f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/log/server.log</log><errorlog>{root}/log/err.log</errorlog>
    <size>10M</size><count>1</count></logger>
  {"".join(f"<listen_host>{h}</listen_host>" for h in listen)}
  <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port><interserver_http_port>{inter}</interserver_http_port>
  <max_connections>256</max_connections><keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>50</max_concurrent_queries>
  <uncompressed_cache_size>100000000</uncompressed_cache_size><mark_cache_size>100000000</mark_cache_size>
  <path>{root}/data/</path><tmp_path>{root}/tmp/</tmp_path><user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <timezone>UTC</timezone>
  <remote_servers><{CLUSTER}>{shard_xml}</{CLUSTER}></remote_servers>
  <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
  <max_session_timeout>3600</max_session_timeout><default_session_timeout>60</default_session_timeout>
</yandex>
"""


def start(root: Path, count: int = 2, timeout: float = 30.0, listen: tuple[str, ...] = ("127.0.0.1",),
          networks: tuple[str, ...] = ("127.0.0.1", "::1")) -> list[Server]:
    """`count` servers listening on `listen` (127.0.0.1 must be among them: /ping and the
    shards use it), the user `default` without password admitted from `networks`."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("clickhouse-server is not installed")
    ports = _free_ports(3 * count)
    tcps = ports[:count]
    servers: list[Server] = []
    try:
        for i in range(count):
            r = root / f"ch{i}"
            for d in ("log", "data", "tmp", "user_files", "format_schemas"):
                (r / d).mkdir(parents=True, exist_ok=True)
            (r / "users.xml").write_text(_USERS.replace(
                "{networks}", "".join(f"<ip>{n}</ip>" for n in networks)))
            (r / "config.xml").write_text(_config(r, tcps[i], ports[count + i], ports[2 * count + i],
                                                  tcps, listen))
            log = open(r / "log" / "stdout.log", "wb")  # noqa: SIM115 - owned by the process
            proc = subprocess.Popen([exe, f"--config-file={r / 'config.xml'}"], cwd=r,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            servers.append(Server(tcps[i], ports[count + i], proc, r))
        deadline = time.monotonic() + timeout
        for s in servers:
            while True:
                if s.proc.poll() is not None:
                    raise RuntimeError(f"clickhouse-server exited: {(s.root / 'log' / 'err.log').read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/ping", timeout=1) as r:
                        if r.read().strip() == b"Ok.":
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("clickhouse-server did not answer /ping")
                time.sleep(0.05)
        return servers
    except BaseException:
        stop(servers)
        raise


def stop(servers: list[Server]) -> None:
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    for s in servers:
        try:
            s.proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
