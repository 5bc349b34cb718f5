"""`l7scope node`: run the node agent; `l7scope node aggregate`: offline aggregation of saved Reports."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click
from google.protobuf import json_format  # type: ignore[import-untyped]

from l7scope.contracts import nodestats
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts.auth import TokenFileError
from l7scope.contracts.nodeconfig import NodeSettings, SettingsError
from l7scope.contracts.record import encode_records
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator
from l7scope.node.enrich import Enricher
from l7scope.node.inventory import Inventory
from l7scope.node.metadata import MetadataCache
from l7scope.node.settings import load

if TYPE_CHECKING:
    from l7scope.node.agent import Agent, MetadataFeed

_EXAMPLE = """
\b
Example (node agent of node-a, demo inventory, server on :8686):
  l7scope node --settings node.yaml --inventory ./inventory --node-name node-a \\
      --server http://127.0.0.1:8686 --envoy-admin http://127.0.0.1:9901 \\
      --status-addr 127.0.0.1:9102
\b
node.yaml holds FelixConfiguration fields (docs/node.md), e.g.:
  policySyncPathPrefix: /var/run/nodeagent
  tproxyMode: Enabled
  l7LogsFlushInterval: 1s
"""


@click.group(invoke_without_command=True, help=f"""Node agent: Policy Sync server, capture rules
(fail open), enrichment, aggregation, l7.log and shipping to the server.

Without a subcommand it runs the agent until SIGTERM/SIGINT.
{_EXAMPLE}""")
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False),
              help="YAML settings (FelixConfiguration spec fields); re-read when it changes.")
@click.option("--inventory", "inventory_dir", type=click.Path(file_okay=False),
              help="Directory of Kubernetes YAML (pods, Services, EndpointSlices) re-read on change.")
@click.option("--node-name", default=socket.gethostname, show_default="hostname",
              help="This node's name (pods with this spec.nodeName are local clients).")
@click.option("--server", "server_url", help="Server base URL for shipping, e.g. http://127.0.0.1:8686.")
@click.option("--server-token-file", type=click.Path(dir_okay=False),
              help="File with the bearer token for shipping (the standalone server's <data-dir>/token, "
                   "or a projected ServiceAccount token in a cluster); re-read when it changes.")
@click.option("--server-ca-file", type=click.Path(dir_okay=False),
              help="CA bundle that signed an https server's certificate [default: $L7SCOPE_CA_FILE, "
                   "else the system's CAs].")
@click.option("--envoy-admin", help="Envoy admin: unix:/path or http://127.0.0.1:PORT; capture is withdrawn while its /ready fails.")
@click.option("--status-addr", help="HOST:PORT for GET /healthz and GET /stats.")
@click.option("--collector-stats-url",
              help="The collector's /stats (e.g. http://127.0.0.1:9901/stats): sent with this node's "
                   "counters to the server, for its /metrics (docs/metrics.md).")
@click.option("--stats-report-seconds", type=click.FloatRange(min=1.0), default=nodestats.REPORT_SECONDS,
              show_default=True, help="How often this node's counters are sent to the --server.")
@click.option("--data-dir", default="/var/lib/l7scope/node", show_default=True,
              help="Spool directory parent (batches not yet shipped survive restarts).")
@click.option("--netns", help="Apply capture rules in this network namespace (tests).")
@click.option("--grace-seconds", default=60.0, show_default=True,
              help="How long a deleted pod's identity still resolves.")
@click.option("--stop-grace", default=5.0, show_default=True,
              help="At SIGTERM, keep taking Reports up to this many seconds (ending 2.5 s after "
                   "the last one), so what the collector read last is not lost.")
@click.option("--kube", "use_kube", is_flag=True,
              help="Watch pods, Services, EndpointSlices, Nodes and the NodeAgentConfiguration "
                   "`default` in the cluster (in-cluster credentials or --kubeconfig).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig for --kube.")
@click.pass_context
def node(ctx: click.Context, settings_path: str | None, inventory_dir: str | None,
         node_name: str, server_url: str | None, server_token_file: str | None, server_ca_file: str | None, envoy_admin: str | None,
         status_addr: str | None, collector_stats_url: str | None, stats_report_seconds: float,
         data_dir: str, netns: str | None, grace_seconds: float, stop_grace: float,
         use_kube: bool, kubeconfig: str | None) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from l7scope.node.agent import Agent, AgentConfig

    if (use_kube or kubeconfig) and settings_path is None:
        # start with the cluster's settings: policySyncPathPrefix only applies at start
        settings_path = _cluster_settings(kubeconfig, data_dir)
    cfg = AgentConfig(node_name=node_name, settings_path=settings_path,
                      inventory_dir=inventory_dir, server_url=server_url,
                      server_token_file=server_token_file, server_ca_file=server_ca_file,
                      envoy_admin=envoy_admin, status_addr=status_addr, data_dir=data_dir,
                      netns=netns, grace_seconds=grace_seconds,
                      collector_stats_url=collector_stats_url,
                      stats_report_seconds=stats_report_seconds)
    try:
        agent = Agent(cfg)
    except (SettingsError, TokenFileError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot start: {e}") from None
    if use_kube or kubeconfig:
        agent.cfg.feeds.append(_kube_feed(agent, kubeconfig))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        agent.start()
    except (OSError, RuntimeError) as e:
        agent.stop()
        raise click.ClickException(f"cannot start: {e}") from None
    while not done.wait(1.0):
        pass
    agent.stop(report_grace=stop_grace)


def _cluster_settings(kubeconfig: str | None, data_dir: str) -> str:
    from pathlib import Path

    from l7scope.kube.client import KubeError, connect
    from l7scope.node.cluster_feed import write_current_settings

    try:
        return str(write_current_settings(connect(kubeconfig), Path(data_dir) / "cluster-settings.yaml"))
    except KubeError as e:
        raise click.ClickException(f"cannot read the NodeAgentConfiguration: {e}") from None


def _kube_feed(agent: Agent, kubeconfig: str | None) -> MetadataFeed:
    """The Kubernetes watches (l7scope.kube) as an agent metadata feed; settings from the
    cluster's NodeAgentConfiguration replace the settings file's when they arrive."""

    def feed(cache: MetadataCache, stop: threading.Event) -> None:
        from l7scope.kube.client import connect
        from l7scope.node.cluster_feed import start_watches

        watches = start_watches(connect(kubeconfig), cache, agent.apply_settings)
        try:
            stop.wait()
        finally:
            watches.stop()

    return feed


def _reports(line: str) -> list[pb.DataplaneStats]:
    obj: Any = json.loads(line)
    items: list[Any] = obj["reports"] if isinstance(obj, dict) and "reports" in obj else [obj]
    out = []
    for item in items:
        ds = pb.DataplaneStats()
        json_format.ParseDict(item, ds, ignore_unknown_fields=True)
        out.append(ds)
    return out


@node.command(help="""Turn saved collector output (DataplaneStats as protobuf-JSON lines, as
`l7scope collector replay` prints) read from stdin into the L7 records the agent would write
(NDJSON on stdout), as one flush interval.

\b
Example:
  l7scope collector replay envoy.log | l7scope node aggregate --settings node.yaml
""")
@click.option("--settings", "settings_path", type=click.Path(exists=True, dir_okay=False),
              help="The agent's settings file (aggregation settings, per-node limit).")
@click.option("--inventory", "inventory_dir", type=click.Path(exists=True, file_okay=False),
              help="Kubernetes YAML directory for enrichment.")
@click.option("--node-name", default=socket.gethostname, show_default="hostname")
@click.option("--start", "start_time", type=float, help="Interval start, epoch seconds.")
@click.option("--end", "end_time", type=float, help="Interval end, epoch seconds (default now).")
def aggregate(settings_path: str | None, inventory_dir: str | None, node_name: str,
              start_time: float | None, end_time: float | None) -> None:
    try:
        settings = load(settings_path) if settings_path else NodeSettings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    cache = MetadataCache()
    if inventory_dir:
        Inventory(inventory_dir, cache).poll()
    enricher = Enricher(cache)
    end = end_time if end_time is not None else time.time()
    agg = Aggregator(settings.aggregation(), node_name, start_time if start_time is not None else end)
    bad = 0
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            for ds in _reports(line):
                for u in ingest.updates(ds, enricher):
                    agg.add(u)
        except (ValueError, json_format.ParseError, AttributeError, TypeError) as e:
            bad += 1
            click.echo(f"line {n}: skipped: {e}", err=True)
    sys.stdout.buffer.write(encode_records(agg.flush(end)))
    sys.stdout.flush()
    if bad:
        click.echo(f"{bad} bad lines skipped", err=True)
