"""`l7scope demo`: the newcomer's first command."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from l7scope.demo.runner import Demo
from l7scope.demo.session import DemoError, DemoOptions, default_data_dir

_HELP = f"""Run a whole shop on this machine and show its traffic.

Builds Online Boutique's services (frontend, cartservice, checkoutservice, ... and redis-cart)
as pods in network namespaces on two simulated nodes, each Service with a VIP and annotated
projectcalico.org/l7-logging=true. Each node runs Envoy (TPROXY), the collector and the node
agent; one server stores the records and serves the Service Graph page. A load generator
shops; some payments are declined, some calls are slow or fail.

Prints the page's URL, then one refreshing line: requests sent (the shop's own exact count),
captured (read by the collectors from Envoy's logs) and logged (sum of `count` in the store).
Ctrl-C (or --duration) stops the load, waits for the last records, and removes every
namespace, rule and process it made. A run after a crash cleans the leftovers first.

Needs root (network namespaces, nftables). Without root, --no-netns runs a FALLBACK: the
services on loopback addresses behind an explicitly addressed Envoy (no transparent capture),
with the same collector, node agent and server.

\b
Examples:
  sudo l7scope demo                      # until Ctrl-C; open the printed URL
  sudo l7scope demo --rate 20 --duration 60
  l7scope demo --no-netns --port 9000    # without root (fallback)

Data (store, logs, counts, summary.json) goes to --data-dir
(default {default_data_dir()}); each run starts with an empty store.
"""


@click.command(help=_HELP)
@click.option("--port", default=DemoOptions.port, show_default=True, help="Port of the page and API.")
@click.option("--rate", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Shopper requests per second to the frontend (each fans out to ~5-15 calls).")
@click.option("--duration", default=0.0, type=click.FloatRange(min=0),
              help="Seconds of traffic, then stop and clean up (0 = until Ctrl-C).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=default_data_dir, show_default="~/.local/share/l7scope/demo",
              help="Where the store, logs and summary.json go.")
@click.option("--no-netns", is_flag=True,
              help="Fallback without root: loopback addresses and an explicitly addressed Envoy.")
@click.option("--interval", default=5, show_default=True, type=click.IntRange(1, 60),
              help="Collector interval in seconds (ApplicationLayer logIntervalSeconds).")
@click.option("--seed", type=int, help="Random seed for pod names, faults and shoppers.")
@click.option("--prefix", default="l7demo", show_default=True, hidden=True,
              help="Name prefix of the demo's namespaces (tests run their own).")
def demo(port: int, rate: float, duration: float, data_dir: Path, no_netns: bool,
         interval: int, seed: int | None, prefix: str) -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    console = Console(highlight=False)
    opts = DemoOptions(port=port, rate=rate, duration=duration, data_dir=data_dir,
                       no_netns=no_netns, interval=interval, seed=seed, prefix=prefix)
    stop = threading.Event()
    phase = ["start"]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # while running: stop gracefully (drain, summary); while starting or draining (or on
        # a second Ctrl-C): interrupt right away; `finally` below still removes everything.
        # Once the teardown has begun, a signal (Ctrl-C twice, SIGTERM after SIGINT) is
        # ignored: interrupting it would leave processes, namespaces or rules behind.
        if d.closing:
            os.write(2, f"(signal {signum} ignored: still removing what the demo made)\n".encode())
            return
        if phase[0] == "run" and not stop.is_set():
            stop.set()
        else:
            d.closing = True  # the teardown begins here: the next signal is already ignored
            raise KeyboardInterrupt

    d = Demo(opts)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with console.status("starting the demo", spinner="dots") as status:
            def progress(msg: str) -> None:
                status.update(f"[bold]{msg}")
                console.print(f"  [dim]·[/] {msg}")
            d.progress = progress
            if no_netns:
                console.print("[yellow bold]FALLBACK (--no-netns):[/] services on loopback "
                              "behind an explicitly addressed Envoy; no transparent capture.")
            url = d.start()
        console.print(f"\n[bold green]Service Graph:[/] [link={url}]{url}[/link]", soft_wrap=True)
        console.print("[dim]  (a one-time login link, valid 5 minutes; later, log in on the page "
                      f"with the token in {d.token_file})[/]", soft_wrap=True)
        console.print(f"[dim]API: {d.url}api/v1/servicegraph with Authorization: Bearer $(cat "
                      f"{d.token_file}) (docs/api.md)[/]", soft_wrap=True)
        console.print("[dim]Ctrl-C stops the demo and removes everything it made.[/]")
        phase[0] = "run"
        _run(d, console, stop, duration)
        if not console.is_terminal:
            console.line()
        phase[0] = "finish"
        console.print("stopping: waiting for the last requests to reach the store "
                      "(Ctrl-C again to skip) ...")
        snap = d.finish()
        if snap is not None:
            verdict = ("[green]every request accounted for[/]" if snap.stored == snap.sent
                       else "[red]counts differ[/]")
            console.print(f"[bold]final:[/] {snap.line()}  {verdict}")
            console.print(f"summary: {opts.data_dir / 'summary.json'}")
    except DemoError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        console.print("\ninterrupted: removing what the demo made ...")
    finally:
        d.closing = True  # let the cleanup finish (on_signal ignores signals from now on)
        left: str | None = None
        try:
            d.close()
        except DemoError as e:
            left = str(e)
            console.print(f"[red]{e}[/]")
        for sig, h in previous.items():
            signal.signal(sig, h)
    if left is not None:
        raise click.ClickException(f"{left}\nThe next `l7scope demo` removes what this run left.")
    console.print("cleaned up: namespaces, rules and processes of the demo are gone.")


def _run(d: Demo, console: Console, stop: threading.Event, duration: float) -> None:
    end = time.monotonic() + duration if duration else None
    with Live(Text("waiting for the first numbers ..."), console=console,
              refresh_per_second=2, transient=False) as live:
        while not stop.is_set():
            snap = d.snapshot()
            left = f"  ({max(0, end - time.monotonic()):.0f} s left)" if end else ""
            live.update(Text(snap.line() + left))
            if d.loadgen is not None and d.loadgen.poll() is not None:
                console.print(f"[red]the load generator exited ({d.loadgen.returncode})[/]")
                return
            if end is not None and time.monotonic() >= end:
                return
            stop.wait(1.0)
