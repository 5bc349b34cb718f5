"""`l7scope status`: readiness and counters of every part; exit code 1 when a part is unhealthy."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from l7scope.contracts import demo_state
from l7scope.contracts.demo_state import ServerPart, State, StateError
from l7scope.contracts.install import DEFAULT_NAMESPACE
from l7scope.contracts.status import COUNTER_NAMES
from l7scope.observe.client import SERVER_ENV
from l7scope.observe.options import (
    KUBE_META,
    NAMESPACE_ENV,
    ca_file_option,
    default_kube_namespace,
    port_forward_flag,
    reach_failed,
    server_target,
    token_file_option,
    token_from,
    verify_from,
)
from l7scope.observe.portforward import MissingKubeClient, kube_missing
from l7scope.observe.terminal import color_option, use_color
from l7scope.status.probe import PartStatus, counters_of, probe_all

_EPILOG = """\b
Examples:
  l7scope status                          # the demo on this machine (reads its state file)
  l7scope status -o json | jq .healthy
  l7scope status --kubeconfig ~/.kube/config
  l7scope status && echo all healthy      # exit code 1 when a part is unhealthy
"""


@click.command(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                 "max_content_width": 100})
@click.option("--state-file", type=click.Path(dir_okay=False),
              help=f"The demo's state file (default: ${demo_state.STATE_ENV}, /run/l7scope/demo.json as root).")
@click.option("--server", default=lambda: os.environ.get(SERVER_ENV) or None,
              show_default=f"env {SERVER_ENV}",
              help="Check this server URL too (or instead of the one in the state file).")
@token_file_option
@ca_file_option
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="Read the state of a cluster installation from the Kubernetes API instead "
                   "($KUBECONFIG or ~/.kube/config when only --context is given).")
@click.option("--context", "kube_context", metavar="NAME",
              help="The kubeconfig context to use (cluster mode; like kubectl --context).")
@click.option("-n", "--namespace", "kube_namespace", default=default_kube_namespace,
              show_default=f"env {NAMESPACE_ENV} or {DEFAULT_NAMESPACE}",
              help="Cluster mode: namespace of the l7-log-collector DaemonSet and the server.")
@port_forward_flag
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds to wait for each part.")
@color_option
def status(state_file: str | None, server: str | None, token_file: Path | None, ca_file: Path | None, kubeconfig: str | None,
           kube_context: str | None, kube_namespace: str, output: str, timeout: float, color: str) -> None:
    """Health and counters of every part: per node Envoy, collector and node agent, the
    annotated Services, and the server with its store.

    With the demo it asks the local processes listed in the demo's state file (entering each
    node's network namespace; run as root). In a cluster (--kubeconfig) it reads the Kubernetes
    API. Exit code: 0 when every part is healthy, 1 when one is not (or nothing was found).
    """
    meta = click.get_current_context().meta.setdefault(KUBE_META, {})
    meta.update({k: v for k, v in (("kubeconfig", kubeconfig), ("context", kube_context)) if v})
    forward = bool(meta.get("port_forward"))  # (--kube-token reads the kubeconfig options too)
    if kubeconfig or kube_context or forward:
        try:
            from l7scope.status.cluster import ClusterError, cluster_status
        except ModuleNotFoundError as e:
            if kube_missing(e):
                raise reach_failed(MissingKubeClient("status --kubeconfig/-P")) from None
            raise
        try:
            if forward:
                with server_target(None, token_file, ca_file, kubeconfig=kubeconfig,
                                   context=kube_context, namespace=kube_namespace) as (url, tok, ver):
                    parts, services, notes = cluster_status(kubeconfig, kube_namespace, url,
                                                            timeout, kube_context, token=tok,
                                                            verify=ver)
            else:
                token = token_from(token_file) if server else None
                parts, services, notes = cluster_status(
                    kubeconfig, kube_namespace, server, timeout, kube_context, token=token,
                    verify=verify_from(ca_file))
        except ClusterError as e:
            raise click.ClickException(str(e)) from None
    else:
        try:
            state = demo_state.read_state(state_file)
        except StateError as e:
            raise click.ClickException(str(e)) from None
        if state is None:
            state = State()
            if server is None:
                where = state_file or str(demo_state.default_path())
                raise click.ClickException(
                    f"nothing to check: no state file at {where}. Start `l7scope demo`, or pass "
                    "--state-file, --server URL or --kubeconfig.")
        token = token_from(token_file)
        if token is None and state.server is not None and state.server.token_file:
            token = token_from(Path(state.server.token_file))
        if server:
            state.server = ServerPart(url=server)
        parts = probe_all(state, timeout=timeout, token=token, verify=verify_from(ca_file))
        services = {"*": list(state.annotated_services)} if state.annotated_services else {}
        notes = []
        in_netns = any(n.netns or any(p is not None and p.netns for p in (n.envoy_admin, n.collector, n.node_agent))
                       for n in state.nodes)
        if in_netns and os.geteuid() != 0:
            notes.append("parts inside network namespaces can only be reached as root "
                         "(run `sudo l7scope status`)")
        if state.demo_pid is not None and not demo_state.pid_alive(state.demo_pid):
            notes.append(f"the demo process {state.demo_pid} that wrote the state file has exited")
    for p in parts:  # what each node agent captures (the Services annotated for logging)
        cap = p.stats.get("capture") if p.part == "node-agent" else None
        if isinstance(cap, dict) and isinstance(cap.get("selected_service_names"), list):
            services[p.node] = [str(n) for n in cap["selected_service_names"]]
    unhealthy = [p for p in parts if not p.healthy]
    if output == "json":
        click.echo(json.dumps({
            "healthy": not unhealthy and bool(parts),
            "parts": [p.to_json() for p in parts],
            "counters": {node: counters_of([p for p in parts if p.node == node])
                         for node in _nodes(parts)},
            "annotated_services": services,
            "notes": notes,
        }, indent=2))
    else:
        colored = use_color(color, sys.stdout.isatty())
        render(parts, services, notes, Console(highlight=False, force_terminal=colored,
                                               no_color=not colored))
    if unhealthy or not parts:
        sys.exit(1)


def _nodes(parts: list[PartStatus]) -> list[str]:
    seen: dict[str, None] = {}
    for p in parts:
        if p.node != "-":
            seen.setdefault(p.node, None)
    return list(seen)


def _fmt(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def render(parts: list[PartStatus], services: dict[str, list[str]], notes: list[str],
           console: Console) -> None:
    t = Table(title="Parts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    t.add_column("NODE", no_wrap=True)
    t.add_column("PART", no_wrap=True)
    t.add_column("STATE", overflow="fold", ratio=2)
    t.add_column("ADDRESS", overflow="fold", ratio=2)
    t.add_column("NOTES", overflow="fold", ratio=1)
    for p in parts:
        mark = Text("\u2714 " if p.healthy else "\u2718 ", style="green" if p.healthy else "bold red")
        mark.append(p.state, style="" if p.healthy else "red")
        addr = f"{p.addr} in {p.netns}" if p.netns else p.addr
        t.add_row(p.node, p.part, mark, addr, Text("; ".join(p.warnings), style="yellow"))
    console.print(t)

    nodes = _nodes(parts)
    if nodes:
        c = Table(title="Counters (since each process started)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        c.add_column("NODE", no_wrap=True)
        for name in COUNTER_NAMES:
            c.add_column(name.upper(), justify="right", no_wrap=True, min_width=len(name))
        for node in nodes:
            mine = [p for p in parts if p.node == node]
            values = counters_of(mine)
            c.add_row(node, *(_fmt(values[n]) for n in COUNTER_NAMES))
        console.print()
        console.print(c)

    console.print()
    listed = {where: sorted(names) for where, names in services.items()}
    by_list: dict[tuple[str, ...], list[str]] = {}
    for where, names in listed.items():
        if where != "*":
            by_list.setdefault(tuple(names), []).append(where)
    if "*" in listed and (not by_list or list(by_list) != [tuple(listed["*"])]):
        names = listed["*"]
        console.print(Text(f"Annotated Services ({len(names)}): ", style="bold") +
                      Text(", ".join(names) or "none"))
    for names_t, nodes_with in by_list.items():
        console.print(Text(f"Annotated Services captured on {', '.join(nodes_with)} ({len(names_t)}): ",
                           style="bold") + Text(", ".join(names_t) or "none"))
    for p in parts:
        n = p.stats.get("selected_services")
        if p.part == "node-agent" and p.node not in services and isinstance(n, int):
            console.print(Text(f"{p.node}: node agent captures {n} annotated Service(s)"))

    for p in parts:
        if p.part != "server" or not p.stats:
            continue
        s = p.stats
        store = s.get("store") or {}
        ingest = s.get("ingest") or {}
        newest = store.get("newest_end_time")
        age = f", newest record {int(time.time() - newest)}s ago" if isinstance(newest, int) else ""
        console.print(Text("Server ", style="bold") + Text(
            f"{p.addr} v{s.get('version', '?')}, up {s.get('uptime_s', 0):.0f}s; store "
            f"{store.get('kind', '?')} at {store.get('location', '?')}: "
            f"{store.get('records', 0):,} records{age}; ingest: "
            f"{ingest.get('records_accepted', 0):,} accepted, {ingest.get('records_rejected', 0):,} rejected, "
            f"{ingest.get('duplicate_batches', 0):,} duplicate batches"))
    for n in notes:
        console.print(Text(n, style="yellow"))
    bad = [p for p in parts if not p.healthy]
    console.print()
    if not parts:
        console.print(Text("no parts found", style="bold red"))
    elif bad:
        console.print(Text(f"{len(bad)} of {len(parts)} parts unhealthy: " + ", ".join(
            f"{p.node}/{p.part}" if p.node != "-" else p.part for p in bad), style="bold red"))
    else:
        console.print(Text(f"all {len(parts)} parts healthy", style="bold green"))
