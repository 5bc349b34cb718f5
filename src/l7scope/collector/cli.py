"""`l7scope collector [run]` and `l7scope collector replay FILE`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click
from google.protobuf import json_format  # type: ignore[import-untyped]

from l7scope.collector.batch import Batcher, FlushResult
from l7scope.collector.config import CollectorSettings
from l7scope.contracts.envoy_log import decode_lines

_RUN_EPILOG = """\b
Example (next to `l7scope node`, with Envoy writing /tmp/envoy.log):
  l7scope collector --envoy-log /tmp/envoy.log \\
      --dial-target unix:///var/run/nodeagent/socket --interval 5 \\
      --status-addr 127.0.0.1:9902
Environment (Calico names): ENVOY_LOG_PATH, FELIX_DIAL_TARGET, ENVOY_LOG_INTERVAL_SECONDS,
ENVOY_LOG_REQUESTS_PER_INTERVAL, ENVOY_TAIL_MAX_LAG, LISTEN_NETWORK/LISTEN_ADDRESS, NODE_NAME.
Flags win over the environment.
"""


def _run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--envoy-log", type=click.Path(path_type=Path),
                     help="Envoy JSON access log to tail. [env ENVOY_LOG_PATH; /tmp/envoy.log]"),
        click.option("--dial-target",
                     help="Node agent Policy Sync socket: unix:///path/socket or a path. "
                          "[env FELIX_DIAL_TARGET; unix:///var/run/nodeagent/socket]"),
        click.option("--interval", type=float,
                     help="Seconds per batch (logIntervalSeconds; 0 = 5). [5]"),
        click.option("--requests-per-interval", type=int,
                     help="Unique request keys per interval (logRequestsPerInterval); -1 = no cap."),
        click.option("--max-lag-bytes", type=int,
                     help="Skip to the end of the log when further behind (0 = never). [1000000]"),
        click.option("--als-listen",
                     help="Also serve Envoy's gRPC Access Log Service: unix:/path (mode 0660) "
                          "or host:port (TLS only: --als-tls-cert, --als-tls-key)."),
        click.option("--als-tls-cert", type=click.Path(path_type=Path, dir_okay=False),
                     help="Certificate (PEM) of a TCP --als-listen."),
        click.option("--als-tls-key", type=click.Path(path_type=Path, dir_okay=False),
                     help="Private key (PEM) of a TCP --als-listen."),
        click.option("--node-name", help="Node name put in every report. [host name]"),
        click.option("--envoy-admin", help="Envoy admin, unix:/path or http://127.0.0.1:PORT (for POST /reopen_logs on rotation)."),
        click.option("--rotate-bytes", type=int,
                     help="Rotate the log to <log>.1 at this size, then make Envoy reopen it."),
        click.option("--status-addr", help="Serve GET /healthz and /stats on HOST:PORT (loopback)."),
        click.option("--state-file", type=click.Path(path_type=Path),
                     help="Where to keep the read position. [<log>.pos]"),
        click.option("--no-checkpoint", is_flag=True, default=False,
                     help="Do not keep a read position: a restart starts at the end of the log."),
        click.option("--detail", "detail",
                     help="Request detail settings as a JSON object (DetailSettings: slowThresholdMs,"
                          " sampleOneIn, include4xx, maxPerInterval; docs/detail.md). [env L7SCOPE_DETAIL]"),
        click.option("--no-detail", is_flag=True, default=False, help="Keep no request detail."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _settings(kw: dict[str, Any]) -> CollectorSettings:
    no_checkpoint = kw.pop("no_checkpoint", False)
    if no_checkpoint:
        kw["checkpoint"] = False
    if kw.pop("no_detail", False):
        kw["detail_enabled"] = False
    try:
        return CollectorSettings.load(os.environ, **kw)
    except ValueError as e:  # a ValidationError, or a detail JSON that does not parse
        raise click.UsageError(str(e)) from e


def _run(kw: dict[str, Any]) -> None:
    from l7scope.collector.runner import Collector  # grpc server parts load only when running

    c = Collector(_settings(kw))
    c.install_signal_handlers()
    c.run()


@click.group(invoke_without_command=True, epilog=_RUN_EPILOG)
@_run_options
@click.pass_context
def collector(ctx: click.Context, /, **kw: Any) -> None:
    """Tail Envoy's access log, batch per interval, report to the node agent.

    Without a subcommand this runs the collector (same as `collector run`).
    """
    if ctx.invoked_subcommand is None:
        _run(kw)


@collector.command(epilog=_RUN_EPILOG)
@_run_options
def run(**kw: Any) -> None:
    """Run the collector until SIGTERM (then flush once more and exit)."""
    _run(kw)


def _epoch(start_time: str | None) -> float | None:
    if not start_time:
        return None
    try:
        return float(start_time)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(start_time).timestamp()
    except ValueError:
        return None


def _read_lines(f: TextIO | Any, limit: int | None) -> Iterator[bytes]:
    for i, raw in enumerate(f):
        if limit is not None and i >= limit:
            return
        yield raw.rstrip(b"\r\n")


def replay_file(path: Path, *, interval: float, requests_per_interval: int = -1,
                limit: int | None = None,
                emit: Callable[[FlushResult], None] | None = None) -> dict[str, int]:
    """Batch a saved log, cutting intervals by each line's start_time. Returns the totals."""
    batcher = Batcher(requests_per_interval)
    totals = dict.fromkeys(("lines", "bad_lines", "invalid_lines", "intervals", "messages",
                            "requests"), 0)
    current: int | None = None

    def flush() -> None:
        res = batcher.flush()
        totals["intervals"] += 1
        totals["messages"] += len(res.messages)
        totals["requests"] += res.requests
        totals["invalid_lines"] += res.invalid
        if emit:
            emit(res)

    with open(path, "rb") as f:
        chunk: list[bytes] = []
        for raw in _read_lines(f, limit):
            chunk.append(raw)
            if len(chunk) >= 4096:
                current = _replay_chunk(chunk, batcher, interval, current, flush, totals)
                chunk = []
        current = _replay_chunk(chunk, batcher, interval, current, flush, totals)
    if batcher.pending_requests:
        flush()
    return totals


def _replay_chunk(chunk: list[bytes], batcher: Batcher, interval: float, current: int | None,
                  flush: Callable[[], None], totals: dict[str, int]) -> int | None:
    totals["lines"] += sum(1 for ln in chunk if ln.strip())
    decoded, bad = decode_lines(chunk)
    totals["bad_lines"] += bad
    for ln in decoded:
        t = _epoch(ln.start_time)
        if t is not None:
            slot = int(t // interval)
            if current is None:
                current = slot
            elif slot > current:
                if batcher.pending_requests:
                    flush()
                current = slot
        batcher.add((ln,))
    return current


@collector.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--interval", type=float, default=5.0, show_default=True,
              help="Interval length in seconds (cut by each line's start_time).")
@click.option("--requests-per-interval", type=int, default=-1, show_default=True,
              help="Unique-key cap per interval (-1 = none).")
@click.option("--limit", type=int, default=None, help="Read at most N lines.")
def replay(file: Path, interval: float, requests_per_interval: int, limit: int | None) -> None:
    """Print the DataplaneStats a saved Envoy log would produce, one JSON object per line.

    \b
    Example:
      l7scope collector replay /tmp/envoy.log --interval 5 | head
    A summary (lines, bad lines, intervals, messages, requests) goes to stderr.
    """
    if interval <= 0:
        raise click.BadParameter("must be > 0", param_hint="--interval")
    out = sys.stdout
    emit_one = functools.partial(json_format.MessageToJson, indent=None,
                                 preserving_proto_field_name=True)

    def emit(res: FlushResult) -> None:
        for m in res.messages:
            out.write(emit_one(m) + "\n")

    totals = replay_file(file, interval=interval, requests_per_interval=requests_per_interval,
                         limit=limit, emit=emit)
    click.echo(" ".join(f"{k}={v}" for k, v in totals.items()), err=True)
