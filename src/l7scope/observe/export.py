"""`l7scope export`: the records of a time range (and selector) as one Parquet or JSON-lines file.

The server's store engine writes the file (POST /api/v1/l7/logs/export, docs/api.md "Export");
this command only streams it to `-o FILE`, written to FILE.part and renamed when complete, so a
failed download never leaves a file that looks whole. The reader's namespace scope applies as
in every query.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from l7scope.contracts.api import DEFAULT_URL, EXPORT_PATH
from l7scope.contracts.timerange import TimeRangeError, parse_time
from l7scope.observe import terminal
from l7scope.observe.client import ApiError, Client, default_server
from l7scope.observe.options import ca_file_option, kube_options, server_target, token_file_option

_EPILOG = """\b
Examples:
  l7scope export --since 1h -o last-hour.parquet
  l7scope export --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z \\
      --selector 'dest_namespace = "shop"' -o shop.jsonl
  duckdb -c "SELECT url, sum(count) FROM 'last-hour.parquet' GROUP BY url"
"""


def time_value(text: str, now: float) -> int:
    """A duration ago (`5m`, `1h30m`, `1d`), or epoch seconds, ISO 8601, `now-...` (the API's
    forms); the value was checked by `TimeParam` already."""
    t = terminal.time_value(text) or ""
    try:
        return parse_time(t, now)
    except TimeRangeError as e:
        raise click.BadParameter(str(e)) from None


def format_for(out: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    if out.suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if out.suffix in (".parquet", ".pq"):
        return "parquet"
    raise click.UsageError(f"cannot tell the format from {out.name!r}: pass --format parquet|jsonl")


def selector_of(selectors: tuple[str, ...]) -> str:
    return " AND ".join(f"({s})" for s in selectors if s.strip())


@click.command("export", epilog=_EPILOG,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--server", default=default_server, show_default=f"env L7SCOPE_SERVER or {DEFAULT_URL}",
              help="URL of the l7scope server.")
@token_file_option
@ca_file_option
@kube_options
@click.option("--since", required=True, type=terminal.TimeParam(),
              help="Records with end_time after TIME: 5m, 1h30m, 1d, now-15m, epoch seconds or ISO 8601.")
@click.option("--until", type=terminal.TimeParam(),
              help="Records with end_time up to TIME (same forms; default now).")
@click.option("--selector", multiple=True, metavar="EXPR",
              help="Only records matching this selector (docs/api.md); repeat to AND several.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (.parquet or .jsonl).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default=None,
              help="File format (default: from the -o suffix).")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the server's answer.")
def export(server: str, token_file: Path | None, ca_file: Path | None, since: str, until: str | None,
           selector: tuple[str, ...], output: Path, fmt: str | None, timeout: float) -> None:
    """Write the L7 records of a time range to a Parquet or JSON-lines file."""
    import time

    now = time.time()
    start = time_value(since, now)
    end = time_value(until, now) if until else int(now)
    if start > end:
        raise click.UsageError(f"--since ({start}) is after --until ({end})")
    fmt = format_for(output, fmt)
    body = {"time_range": {"from": start, "to": end}, "selector": selector_of(selector), "format": fmt}
    part = output.with_name(output.name + ".part")
    try:
        with server_target(server, token_file, ca_file) as (url, token, verify), \
                Client(url, token=token, verify=verify, timeout=timeout) as c, \
                part.open("wb") as f:
            n = c.download(EXPORT_PATH, body, f)
        os.replace(part, output)
    except ApiError as e:
        part.unlink(missing_ok=True)
        raise click.ClickException(str(e)) from None
    except OSError as e:
        part.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {output}: {e}") from None
    click.echo(f"wrote {output} ({fmt}, {n} bytes, end_time {start} < t <= {end})", err=True)
