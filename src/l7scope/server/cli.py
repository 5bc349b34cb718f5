"""`l7scope server`: store L7 records and serve the query API, /metrics and the web page."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from pydantic import ValidationError

from l7scope.contracts.auth import TokenFileError, default_data_dir, ensure_token
from l7scope.server.access import DEFAULT_ALLOWED_HOSTS
from l7scope.server.auth import Authenticator, NoAuth, SharedToken
from l7scope.server.config import ServerConfig, open_store
from l7scope.server.metrics import Metrics
from l7scope.server.retention import Retention, parse_duration
from l7scope.server.store.base import StoreError

log = logging.getLogger(__name__)


@click.command(
    "server",
    epilog="""\b
Examples:
  l7scope server                                   # DuckDB under ~/.local/share/l7scope, port 8686
  l7scope server --port 9090 --retention 7d --data-dir /var/lib/l7scope
  l7scope server --store clickhouse --clickhouse-url clickhouse://ch1:9000/l7 --clickhouse-cluster prod
API: docs/api.md (also GET /openapi.json).""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8686, show_default=True, type=int, help="TCP port (0 = any free port).")
@click.option("--store", "store_kind", type=click.Choice(["duckdb", "clickhouse"]), default="duckdb",
              show_default=True, help="Where records are kept.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"DuckDB store directory [default: {default_data_dir()}].")
@click.option("--clickhouse-url", default="clickhouse://127.0.0.1:9000/default", show_default=True,
              help="ClickHouse native-protocol URL (clickhouse://[user[:pw]@]host:port/db).")
@click.option("--clickhouse-cluster", default=None,
              help="Cluster name from the server's remote_servers: write and read through a Distributed table.")
@click.option("--retention", default="24h", show_default=True,
              help="Remove records older than this (90m, 24h, 7d).")
@click.option("--duckdb-memory-limit", default=None, help="DuckDB memory_limit, e.g. 512MB.")
@click.option("--auth", "auth_kind", type=click.Choice(["token", "none"]), default="token", show_default=True,
              help="token: every API call needs the bearer token of --token-file (created on first "
                   "start); none: no credential asked (only on a loopback --host; prints a warning).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The shared bearer token [default: <data-dir>/token, mode 0600].")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A host name the server may be reached by (Host header), besides IP addresses "
                   "and localhost; repeatable; '*' allows any (not recommended).")
def server(host: str, port: int, store_kind: str, data_dir: Path | None, clickhouse_url: str,
           clickhouse_cluster: str | None, retention: str, duckdb_memory_limit: str | None,
           auth_kind: str, token_file: Path | None, allowed_hosts: tuple[str, ...]) -> None:
    """Store L7 records and serve the query API, /metrics and the Service Graph page.

    Every API call needs `Authorization: Bearer <token>` (the token is in --token-file) or the
    page's login; `observe`, `top` and `status` read the same file (docs/security.md).
    """
    import uvicorn

    from l7scope.server.api import create_app

    try:
        retention_s = parse_duration(retention)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--retention") from None
    try:
        cfg = ServerConfig(
            host=host, port=port, store=store_kind,  # type: ignore[arg-type]
            data_dir=data_dir or default_data_dir(), clickhouse_url=clickhouse_url,
            clickhouse_cluster=clickhouse_cluster, retention_s=retention_s,
            duckdb_memory_limit=duckdb_memory_limit, auth=auth_kind,  # type: ignore[arg-type]
            token_file=token_file, allowed_hosts=(*DEFAULT_ALLOWED_HOSTS, *allowed_hosts),
        )
    except ValidationError as e:
        raise click.UsageError("; ".join(str(err["msg"]).removeprefix("Value error, ")
                                         for err in e.errors())) from None
    authenticator = _authenticator(cfg)
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
                     on_shutdown=shutdown, allowed_hosts=cfg.allowed_hosts)
    log.info("l7scope server: store %s, http://%s:%d", store_kind, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


def _authenticator(cfg: ServerConfig) -> Authenticator:
    if cfg.auth == "none":
        click.echo(f"WARNING: --auth none: anyone who can reach {cfg.host}:{cfg.port} may read and "
                   "write every record", err=True)
        return NoAuth()
    path = cfg.token_path()
    try:
        token, created = ensure_token(path)
    except (TokenFileError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if created:
        log.warning("created the API token file %s (mode 0600)", path)
    return SharedToken(token)
