"""`l7scope server`: store L7 records and serve the query API, /metrics and the web page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from l7scope.server.config import ServerConfig, default, open_store
from l7scope.server.metrics import Metrics
from l7scope.server.retention import Retention, parse_duration
from l7scope.server.store.base import StoreError

log = logging.getLogger(__name__)


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
def server(store_kind: str | None, retention: str | None, **options: Any) -> None:
    """Store L7 records and serve the query API, /metrics and the Service Graph page."""
    import uvicorn

    from l7scope.server.api import create_app

    given = {k: v for k, v in options.items() if v is not None}
    if store_kind is not None:
        given["store"] = store_kind
    if retention is not None:
        try:
            given["retention_s"] = parse_duration(retention)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--retention") from None
    try:
        cfg = ServerConfig(**given)
    except ValidationError as e:
        raise click.UsageError(str(e)) from None
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
    log.info("l7scope server: store %s, http://%s:%d", cfg.store, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
