"""Typed server configuration (unknown keys rejected), and opening the configured store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from l7scope.contracts.api import DEFAULT_HOST, DEFAULT_PORT
from l7scope.server.store.base import Store


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "l7scope"


class ServerConfig(BaseModel):
    """The server's settings; the only place with their defaults (`l7scope server` reads them)."""

    model_config = ConfigDict(extra="forbid")

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    store: Literal["duckdb", "clickhouse"] = "duckdb"
    data_dir: Path = Field(default_factory=default_data_dir)
    clickhouse_url: str = "clickhouse://127.0.0.1:9000/default"
    clickhouse_cluster: str | None = None
    retention_s: int = Field(default=86400, ge=60)
    duckdb_memory_limit: str | None = None
    duckdb_threads: int | None = Field(default=None, ge=1)


def default(name: str) -> Any:
    """The default of one ServerConfig field."""
    return ServerConfig.model_fields[name].get_default(call_default_factory=True)


def open_store(cfg: ServerConfig) -> Store:
    """The configured store (imports only the backend in use)."""
    if cfg.store == "clickhouse":
        from l7scope.server.store.clickhouse import ClickHouseStore

        return ClickHouseStore(cfg.clickhouse_url, cluster=cfg.clickhouse_cluster)
    from l7scope.server.store.duckdb import DuckDBStore

    return DuckDBStore(cfg.data_dir / "l7.duckdb", memory_limit=cfg.duckdb_memory_limit,
                       threads=cfg.duckdb_threads)
