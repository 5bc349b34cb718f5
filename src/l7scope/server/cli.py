"""`l7scope server`: store L7 records and serve the query API, /metrics and the web page."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from l7scope.server.config import ServerConfig, default_data_dir, open_store
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
def server(host: str, port: int, store_kind: str, data_dir: Path | None, clickhouse_url: str,
           clickhouse_cluster: str | None, retention: str, duckdb_memory_limit: str | None) -> None:
    """Store L7 records and serve the query API, /metrics and the Service Graph page."""
    import uvicorn

    from l7scope.server.api import create_app

    try:
        retention_s = parse_duration(retention)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--retention") from None
    cfg = ServerConfig(
        host=host, port=port, store=store_kind,  # type: ignore[arg-type]
        data_dir=data_dir or default_data_dir(), clickhouse_url=clickhouse_url,
        clickhouse_cluster=clickhouse_cluster, retention_s=retention_s,
        duckdb_memory_limit=duckdb_memory_limit,
    )
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

    app = create_app(store, retention_s=cfg.retention_s, metrics=metrics, on_shutdown=shutdown)
    log.info("l7scope server: store %s, http://%s:%d", store_kind, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
