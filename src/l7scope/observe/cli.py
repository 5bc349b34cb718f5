"""`l7scope observe`: L7 records from the server (or from saved JSON lines), with Hubble-style
filters, time selection, `--follow`, and `-o table|compact|json|jsonl`."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import click
import msgspec

from l7scope.contracts.api import DEFAULT_URL, SEARCH_PATH
from l7scope.contracts.timerange import TimeRangeError, parse_time
from l7scope.observe import filters
from l7scope.observe.client import ApiError, Client, default_server, service_backends
from l7scope.observe.filters import FilterError, FilterSpec
from l7scope.observe.follow import SERVER_ORDER, FollowCursor, order_key
from l7scope.observe.options import (
    NotAwareCommand,
    ca_file_option,
    filter_options,
    kube_options,
    server_target,
    spec_from_options,
    token_file_option,
)
from l7scope.observe.printer import FORMATS, Printer, make_printer
from l7scope.observe.terminal import TimeParam, color_option, time_value, use_color

Record = dict[str, Any]
DEFAULT_LAST = 20
LATE_CHECK_POLLS = 10

_EPILOG = """\b
Examples:
  l7scope observe                                   # the last 20 records
  l7scope observe --to-service shop/cartservice --http-status 5+ --since 15m
  l7scope observe --namespace shop --not --http-path '/healthz' -f
  l7scope observe --all --since 1h -o jsonl > saved.jsonl
  l7scope observe --input saved.jsonl --http-method POST -o compact
  l7scope observe --all -o jsonl | l7scope observe - --http-status 5+
  l7scope observe --selector 'duration_max > 100000000' --print-selector
"""


def _resolve_range(since: str | None, until: str | None, now: float) -> tuple[int, int]:
    start = parse_time(time_value(since), now) if since else 0
    end = parse_time(time_value(until), now) if until else int(now)
    if start > end:
        raise click.UsageError(f"--since ({start}) is after --until ({end})")
    return start, end


@click.command(cls=NotAwareCommand, epilog=_EPILOG,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("source", required=False, metavar="[-]")
@click.option("--server", default=default_server, show_default=f"env L7SCOPE_SERVER or {DEFAULT_URL}",
              help="URL of the l7scope server.")
@token_file_option
@ca_file_option
@kube_options
@click.option("--input", "input_file", type=click.Path(allow_dash=True, dir_okay=False),
              help="Read records from this jsonl file (as written by -o jsonl) instead of the server; '-' = stdin.")
@filter_options
@click.option("--selector", multiple=True, metavar="EXPR",
              help="A raw selector (docs/api.md), ANDed with the flags.")
@click.option("--since", type=TimeParam(), help="Records with end_time after TIME: a duration back from now (30s, 5m, 1h30m, 2d), now-15m, epoch seconds or ISO 8601.")
@click.option("--until", type=TimeParam(), help="Records with end_time up to TIME (same forms).")
@click.option("--last", type=click.IntRange(min=1), help=f"Only the last N records (default {DEFAULT_LAST} when neither --all nor a time range is given).")
@click.option("--all", "all_", is_flag=True, help="Every matching record in the time range.")
@click.option("-f", "--follow", is_flag=True, help="Keep running and print new records as they arrive (exactly once each).")
@click.option("--follow-window", type=click.IntRange(min=10), default=300, show_default=True,
              help="With --follow: seconds a record may arrive late (after its end_time) and still be shown; later ones are counted on stderr.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="With --follow: seconds between polls.")
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format: table fits a terminal (full values when piped), wide never cuts "
                   "a value; jsonl can be read back with --input or '-'.")
@color_option
@click.option("--print-selector", is_flag=True, help="Print the selector the flags make, and exit.")
def observe(source: str | None, server: str, token_file: Path | None, ca_file: Path | None, input_file: str | None, selector: tuple[str, ...],
            since: str | None, until: str | None, last: int | None, all_: bool, follow: bool,
            follow_window: int, interval: float, output: str, color: str,
            print_selector: bool, **flag_values: Any) -> None:
    """Show L7 records with filters, like `hubble observe`.

    Filters: values of one flag are alternatives (OR), different flags must all match (AND),
    and `--not` before a filter flag excludes what it matches. Without SOURCE, records come from
    the server; with `-` (or --input FILE) they are read as JSON lines and the same filters apply.
    """
    if source not in (None, "-"):
        raise click.UsageError(f"unexpected argument {source!r}: use '-' for stdin or --input FILE")
    if source == "-" and input_file is None:
        input_file = "-"
    spec = spec_from_options({**flag_values, "selector": selector})
    if last is not None and all_:
        raise click.UsageError("--last and --all cannot be combined")
    printer = make_printer(output, color=use_color(color, sys.stdout.isatty()))
    try:
        if input_file is not None:
            if follow:
                raise click.UsageError("--follow reads from the server, not from a file")
            _observe_file(input_file, spec, since, until, last, printer, print_selector)
            return
        with server_target(server, token_file, ca_file) as (url, token, verify), \
                Client(url, token=token, verify=verify) as client:
            _observe_server(client, spec, since, until, last, all_, follow, follow_window,
                            interval, printer, print_selector)
    except (ApiError, FilterError, TimeRangeError) as e:
        raise click.ClickException(str(e)) from None
    except BrokenPipeError:
        sys.stderr.close()  # reader went away (e.g. `| head`): stop quietly


# --- from a file -------------------------------------------------------------------------------


def read_records(stream: IO[bytes]) -> Iterator[Record]:
    """Records from jsonl (one per line) or from our `-o json` (pretty objects). A line that is not
    a record is reported on stderr with its number and skipped."""
    dec = msgspec.json.Decoder(dict[str, Any])
    buf: list[bytes] = []
    start_line = 0
    for n, line in enumerate(stream, 1):
        s = line.strip()
        if not s and not buf:
            continue
        if buf or s == b"{":
            if not buf:
                start_line = n
            buf.append(line)
            if s != b"}":
                continue
            s, buf = b"".join(buf), []
            n = start_line
        try:
            yield dec.decode(s)
        except msgspec.DecodeError as e:
            click.echo(f"line {n}: not a JSON record ({e}); skipped", err=True)
    if buf:
        click.echo(f"line {start_line}: unterminated JSON object at the end; skipped", err=True)


def _observe_file(path: str, spec: FilterSpec, since: str | None, until: str | None,
                  last: int | None, printer: Printer, print_selector: bool) -> None:
    stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        records: Iterable[Record] = read_records(stream)
        services: dict[str, list[tuple[str, str]]] = {}
        if spec.needs_services():
            records = list(records)
            services = filters.services_from_records(spec.needs_services(), records)
        sel = filters.to_selector(spec, services)
        if print_selector:
            click.echo(sel)
            return
        match = filters.compile_selector(sel)
        lo, hi = _resolve_range(since, until, time.time())
        time_ok: Callable[[Record], bool] = lambda r: lo < int(r.get("end_time", 0)) <= hi  # noqa: E731
        if since is None and until is None:
            time_ok = lambda r: True  # noqa: E731
        printer.start()
        shown = 0
        if last is not None:
            kept: list[Record] = [r for r in records if time_ok(r) and match(r)][-last:]
            printer.records(kept)
            shown = len(kept)
        else:
            batch: list[Record] = []
            for r in records:
                if time_ok(r) and match(r):
                    batch.append(r)
                    if len(batch) >= 500:
                        printer.records(batch)
                        shown += len(batch)
                        batch = []
            printer.records(batch)
            shown += len(batch)
        printer.summary(shown, None, None)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


# --- from the server ---------------------------------------------------------------------------


def _search_sorted(client: Client, sel: str, time_range: Mapping[str, Any], *,
                   limit: int | None, descending: bool
                   ) -> Iterator[tuple[dict[str, Any], list[Record]]]:
    """Pages sorted by SERVER_ORDER, so paging neither repeats nor skips records."""
    sort = [{"field": f, "descending": descending} for f in SERVER_ORDER]
    size = limit if limit is not None and limit <= 1000 else 1000
    page = got = 0
    while True:
        ans = client.request("POST", SEARCH_PATH, {
            "selector": sel, "time_range": dict(time_range), "page_size": size,
            "page_num": page, "sort_by": sort})
        raw: list[Record] = list(ans.get("hits") or [])
        hits = raw if limit is None else raw[: max(0, limit - got)]
        got += len(hits)
        yield ans, hits
        if len(raw) < size or got >= int(ans.get("total_hits", 0)) or (limit is not None and got >= limit):
            return
        page += 1


def in_order(pages: Iterable[list[Record]]) -> Iterator[list[Record]]:
    """Ascending pages -> batches in the full ORDER_FIELDS order: the records of one end_time
    second are held until the second is complete, then sorted (ties the server may break either
    way come out the same on every run)."""
    pending: list[Record] = []
    for page in pages:
        out: list[Record] = []
        for r in page:
            if pending and r.get("end_time") != pending[0].get("end_time"):
                out.extend(sorted(pending, key=order_key))
                pending = []
            pending.append(r)
        if out:
            yield out
    if pending:
        yield sorted(pending, key=order_key)


def _observe_server(client: Client, spec: FilterSpec, since: str | None, until: str | None,
                    last: int | None, all_: bool, follow: bool, follow_window: int,
                    interval: float, printer: Printer, print_selector: bool) -> None:
    time_range: dict[str, Any] = {"from": time_value(since) if since else 0,
                                  "to": time_value(until) if until else "now"}
    if follow and until:
        raise click.UsageError("--follow and --until cannot be combined")
    if spec.needs_services() and print_selector:
        pass  # resolved below against the server, like a real query
    services = service_backends(client, spec, time_range) if spec.needs_services() else {}
    sel = filters.to_selector(spec, services)
    if print_selector:
        click.echo(sel)
        return
    if last is None and not all_ and since is None and until is None:
        last = 0 if follow else DEFAULT_LAST
    printer.start()
    shown = 0
    total: int | None = None
    total_requests: int | None = None
    resolved_to: int | None = None
    if last is None:  # everything in the range, oldest first, streamed page by page
        answers: list[dict[str, Any]] = []

        def pages() -> Iterator[list[Record]]:
            nonlocal time_range
            for ans, hits in _search_sorted(client, sel, time_range, limit=None, descending=False):
                answers.append(ans)
                time_range = {**time_range, "to": int(ans["time_range"]["to"])}  # same range for later pages
                yield hits

        for batch in in_order(pages()):
            printer.records(batch)
            shown += len(batch)
        if answers:
            total, total_requests = answers[0].get("total_hits"), answers[0].get("total_requests")
            resolved_to = int(answers[0]["time_range"]["to"])
    elif last > 0:
        newest: list[Record] = []
        for ans, hits in _search_sorted(client, sel, time_range, limit=last, descending=True):
            total, total_requests = ans.get("total_hits"), ans.get("total_requests")
            resolved_to = int(ans["time_range"]["to"])
            time_range = {**time_range, "to": resolved_to}
            newest.extend(hits)
        newest.sort(key=order_key)
        printer.records(newest)
        shown = len(newest)
    if not follow:
        printer.summary(shown, total, total_requests)
        return
    if resolved_to is None:
        probe = client.search(sel, {"from": "now", "to": "now"}, page_size=1)
        resolved_to = int(probe["time_range"]["to"])
    click.echo(f"following records with end_time after {resolved_to} "
               f"({time.strftime('%H:%M:%S', time.localtime(resolved_to))}); Ctrl-C stops", err=True)
    _follow(client, sel, FollowCursor(start=resolved_to, window=follow_window), interval, printer)


def _follow(client: Client, sel: str, cursor: FollowCursor, interval: float,
            printer: Printer, *, max_polls: int | None = None) -> None:
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    old = signal.signal(signal.SIGTERM, on_term)
    polls = 0
    failing = False
    try:
        while not stop:
            try:
                poll_once(client, sel, cursor, printer)
                if failing:
                    click.echo("server answers again; following on (nothing skipped)", err=True)
                failing = False
            except ApiError as e:
                if e.status is not None and 400 <= e.status < 500:
                    raise  # our request is wrong: retrying cannot help
                if not failing:  # the cursor keeps its place: retry until the server is back
                    click.echo(f"{e}\nretrying every {interval:g}s ...", err=True)
                failing = True
            polls += 1
            if max_polls is not None and polls >= max_polls:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


def poll_once(client: Client, sel: str, cursor: FollowCursor, printer: Printer) -> int:
    """One follow step; returns the number of records printed."""
    ans = client.aggregation(sel, {"from": cursor.low, "to": "now"}, ["time"], interval=1,
                             limit=10000, order_by="time")
    now = int(ans["time_range"]["to"])
    per_second = {int(g["key"]["time"]): int(g["records"]) for g in ans.get("groups", [])}
    printed = 0
    for second in cursor.changed(per_second):
        records: list[Record] = []
        for _, hits in _search_sorted(client, sel, {"from": second - 1, "to": second},
                                      limit=None, descending=False):
            records.extend(hits)
        fresh = cursor.accept(second, records)
        printer.records(fresh)
        printed += len(fresh)
    lo, _ = cursor.range(now)
    if lo > cursor.low:
        cursor.advance(lo)
    cursor.polls += 1
    # the late check scans everything since the start: every LATE_CHECK_POLLS polls is enough
    if cursor.low > cursor.start and cursor.polls % LATE_CHECK_POLLS == 0:
        left = client.aggregation(sel, {"from": cursor.start, "to": cursor.low}, [], limit=1)
        groups = left.get("groups") or []
        n = int(groups[0]["records"]) if groups else 0
        late = cursor.check_late(n)
        if late:
            click.echo(f"{late} records arrived more than --follow-window seconds after their "
                       f"end_time and were not shown (total {cursor.late})", err=True)
    return printed

