"""`l7scope server`: store L7 records and serve the query API, /metrics and the web page."""

from __future__ import annotations

import asyncio
import logging
import resource
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from l7scope.contracts.auth import TokenFileError, ensure_token
from l7scope.server.auth import Authenticator, NoAuth, Sessions, SharedToken
from l7scope.server.config import ServerConfig, default, open_store
from l7scope.server.limits import Limits
from l7scope.server.metrics import Metrics
from l7scope.server.retention import Retention, parse_duration
from l7scope.server.store.base import StoreError

log = logging.getLogger(__name__)
#: --auth kubernetes: a page session keeps the principal (its namespaces) it logged in with, so
#: it lasts an hour instead of 12 (an RBAC change reaches the page within it).
KUBE_SESSION_TTL_S = 3600.0


def _shown(name: str) -> str:
    """` [default: X]` for a help text, X from ServerConfig."""
    value = default(name)
    if name in ("retention_s", "archive_interval_s"):
        value = f"{value // 3600}h" if value % 3600 == 0 else f"{value}s"
    return f" [default: {value}]"


@click.command(
    "server",
    epilog="""\b
Examples:
  l7scope server                                   # DuckDB under ~/.local/share/l7scope, port 8686
  l7scope server --port 9090 --retention 7d --data-dir /var/lib/l7scope
  l7scope server --store clickhouse --clickhouse-url clickhouse://ch1:9000/l7 --clickhouse-cluster prod
API: docs/api.md (also GET /openapi.json).""",
)  # every option defaults to None: ServerConfig holds the defaults (--help shows them from it)
@click.option("--host", help="Address to listen on." + _shown("host"))
@click.option("--port", type=int, help="TCP port (0 = any free port)." + _shown("port"))
@click.option("--store", "store_kind", type=click.Choice(["duckdb", "clickhouse"]),
              help="Where records are kept." + _shown("store"))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="DuckDB store directory." + _shown("data_dir"))
@click.option("--clickhouse-url",
              help="ClickHouse native-protocol URL (clickhouse://[user[:pw]@]host:port/db)." + _shown("clickhouse_url"))
@click.option("--clickhouse-cluster",
              help="Cluster name from the server's remote_servers: write and read through a Distributed table.")
@click.option("--retention", help="Remove records older than this (90m, 24h, 7d)." + _shown("retention_s"))
@click.option("--archive-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write every closed --archive-interval of records as a Parquet file here [default: no archive].")
@click.option("--archive-interval", help="Length of one archive file's interval (15m, 1h, 1d)." + _shown("archive_interval_s"))
@click.option("--duckdb-memory-limit", help="DuckDB memory_limit, e.g. 512MB.")
@click.option("--duckdb-threads", type=int, help="DuckDB threads [default: DuckDB's].")
@click.option("--auth", type=click.Choice(["token", "none", "kubernetes"]),
              help="token: every API call needs the bearer token of --token-file (created on first "
                   "start); kubernetes: Kubernetes tokens checked by TokenReview, reads scoped by "
                   "RBAC (get pods), writes only by --writer-serviceaccount; none: no credential "
                   "asked (only on a loopback --host; prints a warning)." + _shown("auth"))
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The shared bearer token [default: <data-dir>/token, mode 0600].")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              help="--auth kubernetes: the API server's kubeconfig [default: in-cluster credentials, "
                   "else $KUBECONFIG or ~/.kube/config].")
@click.option("--writer-serviceaccount", metavar="NS:NAME",
              help="--auth kubernetes: the one ServiceAccount that may write (the node agents')."
                   + _shown("writer_serviceaccount"))
@click.option("--token-audience", metavar="AUD",
              help="--auth kubernetes: the audience the writers' projected token is minted for."
                   + _shown("token_audience"))
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A host name the server may be reached by (Host header), besides IP addresses "
                   "and localhost; repeatable; '*' allows any (not recommended).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The PEM private key of --tls-cert.")
@click.option("--otlp-endpoint", metavar="ADDR",
              help="Export stored records as OTLP logs and per-edge metrics to this receiver "
                   "(grpc: host:port; http: http(s)://host:port) [default: no export].")
@click.option("--otlp-protocol", type=click.Choice(["grpc", "http"]), help="OTLP transport [default: grpc].")
@click.option("--otlp-insecure", is_flag=True, default=None, help="OTLP over gRPC without TLS.")
@click.option("--otlp-ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CA bundle that signs the OTLP receiver's certificate.")
@click.option("--otlp-header", "otlp_headers", multiple=True, metavar="KEY=VALUE",
              help="A header (gRPC metadata) sent with every export, e.g. authorization=Bearer ...; repeatable.")
def server(store_kind: str | None, retention: str | None, allowed_hosts: tuple[str, ...],
           archive_interval: str | None,
           otlp_endpoint: str | None, otlp_protocol: str | None, otlp_insecure: bool | None,
           otlp_ca_file: Path | None, otlp_headers: tuple[str, ...], **options: Any) -> None:
    """Store L7 records and serve the query API, /metrics and the Service Graph page.

    Every API call needs `Authorization: Bearer <token>` (the token is in --token-file) or the
    page's login; `observe`, `top` and `status` read the same file (docs/security.md).
    """
    import uvicorn

    from l7scope.server.api import create_app

    given = {k: v for k, v in options.items() if v is not None}
    if store_kind is not None:
        given["store"] = store_kind
    if allowed_hosts:
        given["allowed_hosts"] = (*default("allowed_hosts"), *allowed_hosts)
    if retention is not None:
        try:
            given["retention_s"] = parse_duration(retention)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--retention") from None
    if archive_interval is not None:
        try:
            given["archive_interval_s"] = parse_duration(archive_interval)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--archive-interval") from None
    if otlp_endpoint is not None:
        given["otlp"] = _otlp_options(otlp_endpoint, otlp_protocol, otlp_insecure, otlp_ca_file,
                                      otlp_headers)
    elif otlp_protocol or otlp_insecure or otlp_ca_file or otlp_headers:
        raise click.UsageError("the --otlp-* options need --otlp-endpoint")
    try:
        cfg = ServerConfig(**given)
    except ValidationError as e:
        raise click.UsageError("; ".join(str(err["msg"]).removeprefix("Value error, ")
                                         for err in e.errors())) from None
    authenticator = _authenticator(cfg)
    blocking_auth = cfg.auth == "kubernetes"  # TokenReview/SAR calls: off the event loop
    sessions = Sessions(session_ttl_s=KUBE_SESSION_TTL_S) if cfg.auth == "kubernetes" else None
    try:
        store = open_store(cfg)
    except (StoreError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    metrics = Metrics()
    ret = Retention(store, cfg.retention_s, metrics)
    ret.start()
    archiver = None
    if cfg.archive_dir is not None:
        from l7scope.server.archive import Archiver

        try:
            archiver = Archiver(store, cfg.archive_dir, cfg.archive_interval_s, lag_s=cfg.archive_lag_s)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        archiver.start()
    exporter = None
    if cfg.otlp is not None:
        from l7scope.server.otlp_export import OtlpExporter

        exporter = OtlpExporter(cfg.otlp, metrics)
        exporter.start()
        log.info("exporting stored records over OTLP/%s to %s", cfg.otlp.protocol, cfg.otlp.endpoint)

    def shutdown() -> None:
        if archiver is not None:
            archiver.stop()
        ret.stop()
        if exporter is not None:
            exporter.stop()
        store.close()

    app = create_app(store, auth=authenticator, retention_s=cfg.retention_s, metrics=metrics,
                     on_shutdown=shutdown, allowed_hosts=cfg.allowed_hosts, limits=cfg.limits,
                     blocking_auth=blocking_auth, sessions=sessions,
                     sink=exporter.submit if exporter is not None else None,
                     detail_sink=exporter.submit_details if exporter is not None else None,
                     archive_status=None if archiver is None else archiver.counters.public)
    scheme = "https" if cfg.tls_cert else "http"
    log.info("l7scope server: store %s, %s://%s:%d", cfg.store, scheme, cfg.host, cfg.port)
    uvicorn.Server(uvicorn_config(app, cfg.host, cfg.port, cfg.limits,
                                  tls=(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None)).run()


def _otlp_options(endpoint: str, protocol: str | None, insecure: bool | None, ca_file: Path | None,
                  headers: tuple[str, ...]) -> dict[str, Any]:
    parsed: dict[str, str] = {}
    for h in headers:
        key, sep, value = h.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{h!r} is not KEY=VALUE", param_hint="--otlp-header")
        parsed[key.strip()] = value
    out: dict[str, Any] = {"endpoint": endpoint, "headers": parsed}
    if protocol is not None:
        out["protocol"] = protocol
    if insecure:
        out["insecure"] = True
    if ca_file is not None:
        out["ca_file"] = ca_file
    return out


def _authenticator(cfg: ServerConfig) -> Authenticator:
    if cfg.auth == "none":
        click.echo(f"WARNING: --auth none: anyone who can reach {cfg.host}:{cfg.port} may read and "
                   "write every record", err=True)
        return NoAuth()
    if cfg.auth == "kubernetes":
        from l7scope.kube.client import KubeError, connect
        from l7scope.server.kubeauth import KubernetesAuth

        try:
            kube = connect(str(cfg.kubeconfig) if cfg.kubeconfig else None)
        except KubeError as e:
            raise click.ClickException(f"--auth kubernetes: {e.message}") from None
        log.info("auth: Kubernetes tokens at %s; writer %s (audience %s)",
                 kube.configuration.host, cfg.writer_serviceaccount, cfg.token_audience)
        return KubernetesAuth(kube, writer=cfg.writer(), audience=cfg.token_audience)
    path = cfg.token_path()
    try:
        token, created = ensure_token(path)
    except (TokenFileError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if created:
        log.warning("created the API token file %s (mode 0600)", path)
    return SharedToken(token)


#: File descriptors kept free of HTTP connections (store files, sockets, threads, logs).
FD_RESERVE = 64
#: Most connections accepted in one event-loop pass (uvicorn's backlog). asyncio accepts a
#: whole pass before the protocol sees any, and the connections those evict are closed a pass
#: later, so 2 x this many descriptors are kept free on top of the cap as well.
MAX_ACCEPT_BURST = 128


def connection_cap(limits: Limits) -> tuple[int, int]:
    """(connection cap, accept burst): limits.max_connections, raising this process's soft
    RLIMIT_NOFILE toward its hard limit to fit it plus the reserve and two accept bursts, and
    capped below the soft limit when that is not enough, so an accept never fails for want of a
    descriptor (an EMFILE stops asyncio accepting for a second) and /healthz keeps answering."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + FD_RESERVE + 2 * MAX_ACCEPT_BURST
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections, MAX_ACCEPT_BURST
    burst = max(8, min(MAX_ACCEPT_BURST, soft // 8))
    return max(4, min(limits.max_connections, soft - FD_RESERVE - 2 * burst)), burst


def uvicorn_config(app: Any, host: str, port: int, limits: Limits,
                   tls: tuple[Path, Path] | None = None) -> Any:
    """The uvicorn.Config the server runs with: keep-alive, header-size, header-timeout and
    connection limits of `limits` (the body and statement timeouts live in api.py); HTTPS with
    `tls` = (certificate, key)."""
    import uvicorn

    cap, burst = connection_cap(limits)
    log.info("at most %d connections (accepting %d at a time)", cap, burst)
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
        http=_guarded_h11(limits.header_timeout_s, cap), timeout_keep_alive=limits.keep_alive_s,
        h11_max_incomplete_event_size=limits.max_header_bytes, backlog=burst,
        # A backstop only: GuardedH11 keeps open connections (so requests) <= cap; closed ones
        # linger in uvicorn's set until the loop reaps them.
        limit_concurrency=2 * cap,
        ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None,
    )


def _guarded_h11(header_timeout_s: float, cap: int) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        """uvicorn's h11 protocol with a header timeout and a connection cap: a connection must
        send a request's headers within header_timeout_s of opening or of its last answer, and
        at `cap` open connections a new one closes the one waiting longest for headers (or
        itself, when every connection is busy with a request)."""

        _timer: asyncio.TimerHandle | None = None
        _waiting = False
        _idle_since = 0.0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            # (closed connections stay in the set until the loop runs their connection_lost)
            open_ = [c for c in self.connections if isinstance(c, GuardedH11) and not c.transport.is_closing()]
            if len(open_) > cap:
                idle = [c for c in open_ if c is not self and c._waiting]
                if not idle:
                    log.warning("%d connections open, none idle: refusing a new one", len(open_))
                    transport.close()
                    return
                min(idle, key=lambda c: c._idle_since).transport.close()
            self._wait_for_headers()

        def _wait_for_headers(self) -> None:
            self._waiting = True
            self._idle_since = self.loop.time()
            self._cancel_timer()
            self._timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _headers_late(self) -> None:
            if self._waiting and not self.transport.is_closing():
                self.transport.close()

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def handle_events(self) -> None:
            super().handle_events()
            if self._waiting and self.cycle is not None and not self.cycle.response_complete:
                self._waiting = False  # a request's headers arrived
                self._cancel_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait_for_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            self._waiting = False
            super().connection_lost(exc)

    return GuardedH11
