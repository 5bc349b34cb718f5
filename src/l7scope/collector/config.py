"""Collector settings: one typed model, Calico's environment names, CLI flags on top.

Environment (Calico's l7-collector names, spec section 5), then `--flags`:

| setting | env | default |
|---|---|---|
| envoy_log | ENVOY_LOG_PATH | /tmp/envoy.log |
| dial_target | FELIX_DIAL_TARGET | unix socket of `l7scope node` under policySyncPathPrefix |
| interval | ENVOY_LOG_INTERVAL_SECONDS | 5 (0 means 5) |
| requests_per_interval | ENVOY_LOG_REQUESTS_PER_INTERVAL | -1 = unlimited (0 means -1) |
| max_lag_bytes | ENVOY_TAIL_MAX_LAG | 1000000 (0 = never skip) |
| als_listen | LISTEN_NETWORK + LISTEN_ADDRESS | off (Calico: unix /var/run/l7-collector/l7-collector.sock) |
| node_name | NODE_NAME | the host name |
| detail | L7SCOPE_DETAIL (JSON object) | `contracts.detail.DetailSettings` defaults |
| detail_enabled | | true (`--no-detail`: no request detail) |
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from l7scope.contracts.detail import DetailSettings
from l7scope.contracts.policysync import dial_target, socket_path

ENV_NAMES: dict[str, str] = {
    "ENVOY_LOG_PATH": "envoy_log",
    "FELIX_DIAL_TARGET": "dial_target",
    "ENVOY_LOG_INTERVAL_SECONDS": "interval",
    "ENVOY_LOG_REQUESTS_PER_INTERVAL": "requests_per_interval",
    "ENVOY_TAIL_MAX_LAG": "max_lag_bytes",
    "NODE_NAME": "node_name",
    "L7SCOPE_DETAIL": "detail",
}


class CollectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    envoy_log: Path | None = Field(Path("/tmp/envoy.log"),
                                   description="Envoy JSON access log to tail (None: ALS only)")
    dial_target: str = Field(dial_target(socket_path()),
                             description="Policy Sync target: unix:///path/socket or a path")
    interval: float = Field(5.0, description="seconds per batch (logIntervalSeconds)")
    requests_per_interval: int = Field(-1, description="unique keys per interval, -1 = no cap")
    max_lag_bytes: int = Field(1_000_000, ge=0, description="skip to the end when further behind")
    als_listen: str | None = Field(
        None, description="gRPC ALS listen address: unix:/path (mode 0660) or host:port (TLS only)")
    als_tls_cert: Path | None = Field(None, description="certificate (PEM) of a TCP ALS listener")
    als_tls_key: Path | None = Field(None, description="private key (PEM) of a TCP ALS listener")
    node_name: str = Field(default_factory=socket.gethostname)
    envoy_admin: str | None = Field(None, description="Envoy admin (unix:/path or URL), for POST /reopen_logs")
    rotate_bytes: int = Field(0, ge=0, description="rotate the log at this size (0 = never)")
    status_addr: str | None = Field(None, description="HOST:PORT of the /healthz + /stats server")
    state_file: Path | None = Field(None, description="read position; default <envoy_log>.pos")
    checkpoint: bool = Field(True, description="save the read position, resume after a restart")
    start_at_end: bool = Field(True, description="start at the end of an existing log (Calico)")
    report_buffer: int = Field(100_000, ge=1, description="messages kept while the agent is away")
    report_timeout: float = Field(5.0, gt=0, description="seconds per Report() call")
    drain_timeout: float = Field(5.0, ge=0, description="seconds to deliver the rest at exit")
    envoy_exit_wait: float = Field(2.0, ge=0, description="at exit, seconds to wait for Envoy "
                                   "(--envoy-admin) to exit and write its last log lines")
    poll_interval: float = Field(0.05, gt=0, description="seconds between polls of an idle log")
    detail_enabled: bool = Field(True, description="keep request detail (docs/detail.md)")
    detail: DetailSettings = Field(default_factory=DetailSettings,
                                   description="request detail: thresholds, sampling, cap")

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v < 0:
            raise ValueError("interval must be >= 0")
        return v or 5.0  # Calico: 0 means the default

    @field_validator("requests_per_interval")
    @classmethod
    def _cap(cls, v: int) -> int:
        return -1 if v <= 0 else v  # Calico: 0 means unlimited; negative is unlimited

    @field_validator("dial_target")
    @classmethod
    def _target(cls, v: str) -> str:
        return dial_target(v)

    @model_validator(mode="after")
    def _als_tls(self) -> CollectorSettings:
        if (self.als_tls_cert is None) != (self.als_tls_key is None):
            raise ValueError("als_tls_cert and als_tls_key go together")
        if self.als_listen:
            from l7scope.collector.als import check_listen  # (grpc only when ALS is asked for)

            check_listen(self.als_listen, self.als_tls)
        return self

    @property
    def als_tls(self) -> tuple[Path, Path] | None:
        if self.als_tls_cert is None or self.als_tls_key is None:
            return None
        return self.als_tls_cert, self.als_tls_key

    def state_path(self) -> Path | None:
        if not self.checkpoint or self.envoy_log is None:
            return None
        return self.state_file or self.envoy_log.with_name(self.envoy_log.name + ".pos")

    @classmethod
    def load(cls, env: Mapping[str, str], **overrides: Any) -> CollectorSettings:
        """Defaults, then Calico's environment variables, then `overrides` that are not None."""
        values: dict[str, Any] = {}
        for name, field in ENV_NAMES.items():
            if env.get(name):
                values[field] = env[name]
        if env.get("LISTEN_ADDRESS"):
            network = env.get("LISTEN_NETWORK", "unix")
            addr = env["LISTEN_ADDRESS"]
            values["als_listen"] = f"unix:{addr}" if network == "unix" else addr
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("detail"), str):  # env / flag: a JSON object
            try:
                values["detail"] = json.loads(values["detail"])
            except ValueError as e:
                raise ValueError(f"detail settings are not a JSON object: {e}") from e
        return cls(**values)
