"""Typed server configuration (unknown keys rejected), and opening the configured store."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from l7scope.contracts.api import DEFAULT_HOST, DEFAULT_PORT
from l7scope.contracts.auth import (
    DEFAULT_WRITER_SERVICEACCOUNT,
    TOKEN_AUDIENCE,
    TOKEN_FILE_NAME,
    default_data_dir,
)
from l7scope.server.access import DEFAULT_ALLOWED_HOSTS
from l7scope.server.limits import Limits
from l7scope.server.store.base import Store


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OtlpConfig(BaseModel):
    """Where and how stored records are exported (`l7scope server --otlp-*`)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(min_length=1)  # grpc: host:port; http: http(s)://host:port
    protocol: Literal["grpc", "http"] = "grpc"
    insecure: bool = False  # grpc without TLS (an http endpoint's scheme decides for itself)
    ca_file: Path | None = None  # CA bundle for the receiver's certificate
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. an authorization header
    resource: dict[str, str] = Field(default_factory=dict)  # extra resource attributes
    queue_records: int = Field(default=100_000, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    retry_s: float = Field(default=60.0, ge=0)  # how long one batch is retried


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
    # Scheduled archive (server/archive.py): closed intervals as Parquet files in archive_dir.
    archive_dir: Path | None = None
    archive_interval_s: int = Field(default=3600, ge=60)
    archive_lag_s: int = Field(default=300, ge=0)
    duckdb_memory_limit: str | None = None
    duckdb_threads: int | None = Field(default=None, ge=1)
    # Who may call the API (docs/security.md): "token" = the shared bearer token in token_file
    # (default <data_dir>/token, created on first start); "none" = nobody is asked (loopback only);
    # "kubernetes" = Kubernetes tokens (TokenReview), reads scoped by RBAC (SubjectAccessReview),
    # writes only by writer_serviceaccount with a token for token_audience (server/kubeauth.py).
    auth: Literal["token", "none", "kubernetes"] = "token"
    token_file: Path | None = None
    kubeconfig: Path | None = None  # kubernetes: None = in-cluster credentials (or $KUBECONFIG)
    writer_serviceaccount: str = DEFAULT_WRITER_SERVICEACCOUNT
    token_audience: str = Field(default=TOKEN_AUDIENCE, min_length=1)
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    limits: Limits = Field(default_factory=Limits)
    otlp: OtlpConfig | None = None  # export stored records as OTLP logs + metrics (server/otlp_export.py)

    def token_path(self) -> Path:
        return self.token_file or self.data_dir / TOKEN_FILE_NAME

    # HTTPS: both or neither (PEM files; the key unencrypted)
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        for f in (self.tls_cert, self.tls_key):
            if f is not None and not f.is_file():
                raise ValueError(f"no such file: {f}")
        return self

    @field_validator("writer_serviceaccount")
    @classmethod
    def _namespace_and_name(cls, v: str) -> str:
        ns, sep, name = v.partition(":")
        if not sep or not ns or not name or ":" in name:
            raise ValueError(f"--writer-serviceaccount is NAMESPACE:NAME, not {v!r}")
        return v

    def writer(self) -> tuple[str, str]:
        ns, _, name = self.writer_serviceaccount.partition(":")
        return ns, name

    @model_validator(mode="after")
    def _no_open_server_off_loopback(self) -> ServerConfig:
        if self.auth == "none" and not is_loopback(self.host):
            raise ValueError(f"--auth none is only allowed on a loopback address, not {self.host!r}: "
                             "anyone who can reach the port could read and write every record")
        return self


def default(name: str) -> Any:
    """The default of one ServerConfig field."""
    return ServerConfig.model_fields[name].get_default(call_default_factory=True)


def open_store(cfg: ServerConfig) -> Store:
    """The configured store (imports only the backend in use)."""
    if cfg.store == "clickhouse":
        from l7scope.server.store.clickhouse import ClickHouseStore

        return ClickHouseStore(cfg.clickhouse_url, cluster=cfg.clickhouse_cluster,
                               statement_timeout_s=cfg.limits.statement_timeout_s)
    from l7scope.server.store.duckdb import DuckDBStore

    return DuckDBStore(cfg.data_dir / "l7.duckdb", memory_limit=cfg.duckdb_memory_limit,
                       threads=cfg.duckdb_threads)
