"""Typed server configuration (unknown keys rejected), and opening the configured store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from l7scope.server.limits import Limits
from l7scope.server.store.base import Store


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "l7scope"


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8686, ge=0, le=65535)
    store: Literal["duckdb", "clickhouse"] = "duckdb"
    data_dir: Path = Field(default_factory=default_data_dir)
    clickhouse_url: str = "clickhouse://127.0.0.1:9000/default"
    clickhouse_cluster: str | None = None
    retention_s: int = Field(default=86400, ge=60)
    duckdb_memory_limit: str | None = None
    duckdb_threads: int | None = Field(default=None, ge=1)
    limits: Limits = Field(default_factory=Limits)


def open_store(cfg: ServerConfig) -> Store:
    """The configured store (imports only the backend in use)."""
    if cfg.store == "clickhouse":
        from l7scope.server.store.clickhouse import ClickHouseStore

        return ClickHouseStore(cfg.clickhouse_url, cluster=cfg.clickhouse_cluster,
                               statement_timeout_s=cfg.limits.statement_timeout_s)
    from l7scope.server.store.duckdb import DuckDBStore

    return DuckDBStore(cfg.data_dir / "l7.duckdb", memory_limit=cfg.duckdb_memory_limit,
                       threads=cfg.duckdb_threads)
