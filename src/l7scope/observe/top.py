"""`l7scope top`: a live table of the busiest edges (source workload -> destination Service) or
routes (Service, method, URL) over a sliding window, sorted by requests/s, error rate or p99,
like `linkerd viz top`. One aggregation query per refresh; `--once` prints a single table."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from l7scope.contracts.api import DEFAULT_URL
from l7scope.contracts.record import TYPE_UNLOGGED
from l7scope.observe import filters
from l7scope.observe.client import ApiError, Client, default_server, service_backends
from l7scope.observe.filters import FilterError
from l7scope.observe.options import (
    NotAwareCommand,
    ca_file_option,
    filter_options,
    kube_options,
    server_target,
    spec_from_options,
    token_file_option,
)
from l7scope.observe.printer import human_ns, safe, status_style
from l7scope.observe.terminal import DurationParam, color_option, use_color

GROUPS: Final[dict[str, list[str]]] = {
    "edges": ["src_namespace", "src_name_aggr", "dest_service_namespace", "dest_service_name",
              "dest_namespace", "dest_name_aggr"],
    "routes": ["dest_service_namespace", "dest_service_name", "method", "url"],
}
SORTS: Final = ("rps", "errors", "p99")

_EPILOG = """\b
Examples:
  l7scope top                                  # busiest edges over the last minute, live
  l7scope top --by routes --sort p99 --namespace shop
  l7scope top --sort errors --window 15m --once -o json
"""


@dataclass(frozen=True)
class Row:
    key: dict[str, Any]
    count: int
    rps: float
    errors: int
    error_rate: float
    p50: int | None
    p99: int | None
    duration_max: int


def rows_from(groups: list[dict[str, Any]], window: int, sort: str) -> list[Row]:
    rows = [Row(g["key"], int(g["count"]), int(g["count"]) / window, int(g["errors"]),
                float(g["error_rate"]), g.get("p50"), g.get("p99"), int(g["duration_max"]))
            for g in groups]
    if sort == "errors":
        rows.sort(key=lambda r: (r.error_rate, r.count), reverse=True)
    elif sort == "p99":
        rows.sort(key=lambda r: (r.p99 if r.p99 is not None else -1, r.count), reverse=True)
    else:
        rows.sort(key=lambda r: r.count, reverse=True)
    return rows


def _named(ns: Any, name: Any) -> str:
    ns, name = str(ns or "-"), str(name or "-")
    return name if ns in ("", "-") else f"{ns}/{name}"


def render(rows: list[Row], by: str, limit: int, header: str, *, wide: bool = False) -> Group:
    """The table; `wide` (piped output) sizes every column to its content and cuts nothing."""
    t = Table(show_edge=False, pad_edge=False, expand=False)

    def cap(n: int) -> int | None:
        return None if wide else n

    if by == "edges":
        t.add_column("SOURCE", overflow="ellipsis", no_wrap=True, max_width=cap(40))
        t.add_column("DESTINATION", overflow="ellipsis", no_wrap=True, max_width=cap(40))
    else:
        t.add_column("SERVICE", overflow="ellipsis", no_wrap=True, max_width=cap(32))
        t.add_column("METHOD", no_wrap=True, min_width=6)
        t.add_column("URL", overflow="ellipsis", no_wrap=True, max_width=cap(60))
    for col in ("REQ/S", "ERR%", "P50", "P99", "MAX"):
        t.add_column(col, justify="right", no_wrap=True, min_width=7)
    for r in rows[:limit]:
        k = r.key
        if by == "edges":
            dest = (_named(k.get("dest_service_namespace"), k.get("dest_service_name"))
                    if k.get("dest_service_name") else _named(k.get("dest_namespace"), k.get("dest_name_aggr")))
            left = [safe(_named(k.get("src_namespace"), k.get("src_name_aggr"))), safe(dest)]
        else:
            left = [safe(_named(k.get("dest_service_namespace"), k.get("dest_service_name"))),
                    safe(k.get("method") or "-"), safe(k.get("url") or "-")]
        err = Text(f"{100 * r.error_rate:.1f}",
                   style=status_style("5") if r.error_rate >= 0.05 else (status_style("4") if r.error_rate else ""))
        t.add_row(*left, f"{r.rps:.2f}", err, human_ns(r.p50), human_ns(r.p99), human_ns(r.duration_max))
    return Group(Text(header, style="dim"), t)


@click.command(cls=NotAwareCommand, epilog=_EPILOG,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--server", default=default_server, show_default=f"env L7SCOPE_SERVER or {DEFAULT_URL}",
              help="URL of the l7scope server.")
@token_file_option
@ca_file_option
@kube_options
@click.option("--by", type=click.Choice(list(GROUPS)), default="edges", show_default=True,
              help="Rows: source workload -> destination Service, or Service routes.")
@click.option("--sort", type=click.Choice(SORTS), default="rps", show_default=True,
              help="Order: requests/s, error rate, or p99 latency (descending).")
@click.option("--window", type=DurationParam(), default="60s", show_default=True,
              help="Sliding window: 30s, 5m, 1h30m.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--limit", "limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Rows shown (was -n/--rows; -n is now --namespace, as in kubectl).")
@click.option("--once", is_flag=True, help="Print one table and exit (no live view).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json implies --once.")
@color_option
@filter_options
@click.option("--selector", multiple=True, metavar="EXPR", help="A raw selector, ANDed with the flags.")
def top(server: str, token_file: Path | None, ca_file: Path | None, by: str, sort: str, window: int, interval: float, limit: int, once: bool,
        output: str, color: str, selector: tuple[str, ...], **flag_values: Any) -> None:
    """Live table of the busiest edges or routes, like `linkerd viz top`.

    Takes the same filters as `l7scope observe` (including --not). Requests the node agents did
    not log in detail (per-node limit) are counted in the header, not in the rows.
    """
    secs = window
    spec = spec_from_options({**flag_values, "selector": selector})
    tty = sys.stdout.isatty()
    colored = use_color(color, tty)
    # piped: no width limit, so no column is dropped and no value is cut
    console = Console(highlight=False, force_terminal=colored, no_color=not colored,
                      width=None if tty else 100_000)
    try:
        with server_target(server, token_file, ca_file) as (url, token, verify), \
                Client(url, token=token, verify=verify) as client:
            def frame() -> tuple[list[Row], str]:
                tr = {"from": f"now-{secs}s", "to": "now"}
                services = service_backends(client, spec, tr) if spec.needs_services() else {}
                sel = filters.to_selector(spec, services)
                logged_sel = f'({sel}) AND type != "{TYPE_UNLOGGED}"' if sel else f'type != "{TYPE_UNLOGGED}"'
                ans = client.aggregation(logged_sel, tr, GROUPS[by], limit=10000, order_by="count")
                rows = rows_from(ans.get("groups") or [], secs, sort)
                unl = client.aggregation(f'type = "{TYPE_UNLOGGED}"', tr, [], limit=1)
                unlogged = sum(int(g["count"]) for g in unl.get("groups") or [])
                total = sum(r.count for r in rows)
                header = (f"{time.strftime('%H:%M:%S')}  window {secs}s  {len(rows)} {by}  "
                          f"{total / secs:.2f} req/s  sorted by {sort}")
                if unlogged:
                    header += f"  ({unlogged} requests not logged in detail, all nodes)"
                return rows, header

            if output == "json":
                rows, header = frame()
                click.echo(json.dumps({"by": by, "sort": sort, "window_s": secs, "rows": [
                    {**r.__dict__} for r in rows[:limit]]}, indent=2))
                return
            if once:
                rows, header = frame()
                console.print(render(rows, by, limit, header, wide=not tty))
                return
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while True:
                    rows, header = frame()
                    live.update(render(rows, by, limit, header + "  (Ctrl-C stops)"), refresh=True)
                    time.sleep(interval)
    except (ApiError, FilterError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass
