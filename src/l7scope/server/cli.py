"""`l7scope server`: store L7 records and serve the query API, /metrics and the web page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from l7scope.contracts.auth import TokenFileError, ensure_token
from l7scope.server.auth import Authenticator, NoAuth, Sessions, SharedToken
from l7scope.server.config import ServerConfig, default, open_store
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
    if name == "retention_s":
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
def server(store_kind: str | None, retention: str | None, allowed_hosts: tuple[str, ...],
           **options: Any) -> None:
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

    def shutdown() -> None:
        ret.stop()
        store.close()

    app = create_app(store, auth=authenticator, retention_s=cfg.retention_s, metrics=metrics,
                     on_shutdown=shutdown, allowed_hosts=cfg.allowed_hosts,
                     blocking_auth=blocking_auth, sessions=sessions)
    log.info("l7scope server: store %s, http://%s:%d", cfg.store, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


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
