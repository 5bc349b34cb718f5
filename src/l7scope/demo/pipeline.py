"""The l7scope processes of the demo, as argv and files: per node an Envoy, a collector and a
node agent; one server. Shared by the namespace demo and the `--no-netns` fallback."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from l7scope.contracts import policysync
from l7scope.contracts.auth import TOKEN_FILE_NAME
from l7scope.contracts.status import STATS_PATH

ENVOY_ADMIN_PORT: Final = 9901
NODE_STATUS_PORT: Final = 9102
COLLECTOR_STATUS_PORT: Final = 9103
RELAY_PORT: Final = 18080  # inside a node namespace: the way to the server


def l7scope(*args: str) -> list[str]:
    """argv of an `l7scope` subcommand run with this interpreter."""
    return [sys.executable, "-m", "l7scope", *args]


@dataclass(frozen=True)
class NodeFiles:
    """Where one node's parts keep their files."""

    root: Path

    @property
    def inventory(self) -> Path:
        return self.root / "inventory"

    @property
    def settings(self) -> Path:
        return self.root / "node.yaml"

    @property
    def envoy_log(self) -> Path:
        return self.root / "envoy-access.log"

    @property
    def policysync_prefix(self) -> Path:
        return self.root / "nodeagent"

    @property
    def agent_data(self) -> Path:
        return self.root / "agent"

    @property
    def l7logs(self) -> Path:
        return self.root / "l7logs"

    def make(self) -> None:
        for d in (self.inventory, self.policysync_prefix, self.agent_data, self.l7logs):
            d.mkdir(parents=True, exist_ok=True)


def node_settings(files: NodeFiles, capture: bool, tproxy_port: int) -> dict[str, Any]:
    """FelixConfiguration-style settings of a demo node agent."""
    return {
        "policySyncPathPrefix": str(files.policysync_prefix),
        "tproxyMode": "Enabled" if capture else "Disabled",
        "tproxyPort": tproxy_port,
        "l7LogsFlushInterval": "1s",
        "l7LogsFileDirectory": str(files.l7logs),
        # show the protocol (HTTP/1.1, HTTP/2, tcp) and user agent in the demo's records
        "l7LogsFileAggregationHTTPHeaderInfo": "IncludeL7HTTPHeaderInfo",
        # the shop's product pages as one route (docs/routes.md)
        "l7RouteTemplates": {"rules": ["/product/{id}"]},
    }


def write_node_files(files: NodeFiles, objects: list[dict[str, Any]], capture: bool,
                     tproxy_port: int) -> None:
    files.make()
    files.settings.write_text(yaml.safe_dump(node_settings(files, capture, tproxy_port)))
    tmp = files.inventory / ".demo.yaml.tmp"
    tmp.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    tmp.replace(files.inventory / "demo.yaml")


def node_argv(files: NodeFiles, node: str, server_url: str, envoy_admin: str,
              status_addr: str, token_file: Path, collector_status_addr: str) -> list[str]:
    return l7scope("node", "--settings", str(files.settings), "--inventory", str(files.inventory),
                   "--node-name", node, "--server", server_url, "--server-token-file", str(token_file),
                   "--envoy-admin", envoy_admin, "--status-addr", status_addr,
                   "--data-dir", str(files.agent_data),
                   # the node's counters in the server's /metrics, as in a cluster
                   "--collector-stats-url", f"http://{collector_status_addr}{STATS_PATH}",
                   # the demo drains before it stops (its collectors have nothing left): keep the
                   # agent's stop well inside the 5 s its teardown gives each process
                   "--stop-grace", "1")


def collector_argv(files: NodeFiles, node: str, interval_s: int, status_addr: str) -> list[str]:
    return l7scope("collector", "--envoy-log", str(files.envoy_log),
                   "--dial-target", policysync.dial_target(files.policysync_prefix / "socket"),
                   "--interval", str(interval_s), "--requests-per-interval", "-1",
                   "--max-lag-bytes", "0",  # never skip ahead: the demo accounts for everything
                   "--node-name", node, "--status-addr", status_addr)


def token_file(server_dir: Path) -> Path:
    """The demo server's bearer token (created by the demo before the server starts)."""
    return server_dir / TOKEN_FILE_NAME


def server_argv(host: str, port: int, data_dir: Path) -> list[str]:
    return l7scope("server", "--host", host, "--port", str(port), "--store", "duckdb",
                   "--data-dir", str(data_dir), "--token-file", str(token_file(data_dir)))
