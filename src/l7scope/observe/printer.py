"""Output formats of `l7scope observe`: `table` (default, coloured, fits the terminal), `compact`
(one line per record), `json` (each record pretty-printed) and `jsonl` (one record per line, the
format `observe` reads back from a file or standard input).

Records are plain dicts with the `contracts.record.L7Record` fields. URLs and user agents are
attacker-controlled: the human formats escape control characters so a record can never drive the
terminal; the JSON formats are escaped by the JSON encoder.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Final, Literal

import msgspec
from rich.console import Console
from rich.text import Text

from l7scope.contracts.record import EXCLUDED, TYPE_UNLOGGED

Record = Mapping[str, Any]
Format = Literal["table", "wide", "compact", "json", "jsonl"]
FORMATS: Final[tuple[str, ...]] = ("table", "wide", "compact", "json", "jsonl")

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_jsonl: Final = msgspec.json.Encoder()


def safe(text: object) -> str:
    """Text for a terminal: control characters become visible `\\xNN` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def human_ns(ns: object) -> str:
    """A duration in nanoseconds, short: `850us`, `12.3ms`, `1.24s`; `-` when unknown."""
    if not isinstance(ns, int) or ns <= 0:
        return "-"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}us"
    if ns < 1_000_000_000:
        ms = ns / 1_000_000
        return f"{ms:.1f}ms" if ms < 100 else f"{ms:.0f}ms"
    return f"{ns / 1e9:.2f}s"


def human_bytes(n: object) -> str:
    if not isinstance(n, int) or n < 0:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # unreachable


def _named(namespace: object, name: object) -> str:
    ns = str(namespace or EXCLUDED)
    nm = str(name or EXCLUDED)
    return nm if ns in ("", EXCLUDED) else f"{ns}/{nm}"


def source_of(rec: Record) -> str:
    return safe(_named(rec.get("src_namespace"), rec.get("src_name_aggr")))


def destination_of(rec: Record) -> str:
    """`ns/service:port` when the request went to a known Service, else `ns/workload:port`."""
    svc = rec.get("dest_service_name") or ""
    if svc:
        ns = rec.get("dest_service_namespace") or rec.get("dest_namespace")
        port = rec.get("dest_service_port") or 0
        text = _named(ns, svc)
    else:
        text = _named(rec.get("dest_namespace"), rec.get("dest_name_aggr"))
        port = rec.get("dest_port_num") or 0
    return safe(f"{text}:{port}" if port else text)


def status_style(code: str) -> str:
    if not code:
        return "dim"
    return {"1": "blue", "2": "green", "3": "cyan", "4": "yellow", "5": "bold red"}.get(
        code[0], "magenta"
    )


def kind_of(rec: Record) -> str:
    """What the request was: the HTTP method, or TCP / TLS for connections."""
    method = str(rec.get("method") or "")
    if method:
        return safe(method)
    typ = str(rec.get("type") or "")
    return safe(typ.upper()) if typ in ("tcp", "tls") else "-"


def target_of(rec: Record) -> str:
    """The URL, or the TLS server name for TLS connections."""
    url = str(rec.get("url") or "")
    if url:
        return safe(url)
    sni = str(rec.get("tls_sni") or "")
    return safe(f"sni={sni}") if sni else "-"


def is_unlogged(rec: Record) -> bool:
    return rec.get("type") == TYPE_UNLOGGED


@functools.lru_cache(maxsize=4096)
def _strftime(epoch: int, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(epoch))


def local_time(epoch: object, fmt: str) -> str:
    if not isinstance(epoch, int):
        return "-"
    return _strftime(epoch, fmt)


_ANSI: Final[dict[str, str]] = {
    "dim": "2", "bold": "1", "green": "32", "yellow": "33", "cyan": "36", "blue": "34",
    "magenta": "35", "bold red": "1;31",
}


class _Line:
    """A line of text with optional ANSI colours (rich's per-line rendering is ~30x slower,
    too slow for `--all` over a large range)."""

    __slots__ = ("color", "parts")

    def __init__(self, color: bool) -> None:
        self.color = color
        self.parts: list[str] = []

    def append(self, text: str, style: str = "") -> None:
        code = _ANSI.get(style) if self.color and style else None
        self.parts.append(f"\x1b[{code}m{text}\x1b[0m" if code else text)

    def render(self) -> str:
        return "".join(self.parts)


# ---------------------------------------------------------------------------------------------


class Printer:
    """Base class: `start()`, then `records()` any number of times, then `summary()`."""

    def __init__(self, out: IO[str], err: IO[str] | None = None) -> None:
        self.out = out
        self.err = err if err is not None else sys.stderr

    def start(self) -> None:
        pass

    def records(self, recs: Iterable[Record]) -> None:
        raise NotImplementedError

    def summary(self, shown: int, total: int | None, total_requests: int | None) -> None:
        """One line on stderr saying how complete the answer is (human formats only)."""


class JsonlPrinter(Printer):
    def records(self, recs: Iterable[Record]) -> None:
        w = self.out.write
        for r in recs:
            w(_jsonl.encode(r).decode())
            w("\n")
        self.out.flush()


class JsonPrinter(Printer):
    def records(self, recs: Iterable[Record]) -> None:
        for r in recs:
            self.out.write(msgspec.json.format(_jsonl.encode(r), indent=2).decode())
            self.out.write("\n")
        self.out.flush()


class _HumanPrinter(Printer):
    def __init__(
        self,
        out: IO[str],
        err: IO[str] | None = None,
        *,
        color: bool | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__(out, err)
        self.console = Console(
            file=out,
            force_terminal=color,
            no_color=(color is False) or None,
            width=width,
            highlight=False,
            soft_wrap=True,
            emoji=False,
            markup=False,
        )
        self.err_console = Console(
            file=self.err,
            force_terminal=color,
            no_color=(color is False) or None,
            highlight=False,
            soft_wrap=True,
            markup=False,
            stderr=True,
        )

        self.color = (color if color is not None
                      else self.console.color_system is not None and not self.console.no_color)

    def emit(self, lines: Iterable[_Line]) -> None:
        self.out.write("".join(line.render() + "\n" for line in lines))
        self.out.flush()

    def summary(self, shown: int, total: int | None, total_requests: int | None) -> None:
        if total is None:
            line = f"{shown} records"
        else:
            line = f"showing {shown} of {total} records"
            if total_requests is not None:
                line += f" ({total_requests} requests)"
        self.err_console.print(Text(line, style="dim"))


class CompactPrinter(_HumanPrinter):
    """`Nov 26 19:45:27 [node] shop/frontend-* -> shop/cart:7070 GET cart:7070/x 200 x12 ...`"""

    def line(self, r: Record) -> _Line:
        t = _Line(self.color)
        t.append(local_time(r.get("end_time"), "%b %d %H:%M:%S"), style="dim")
        host = r.get("host") or ""
        if host:
            t.append(f" [{safe(host)}]", style="dim")
        if is_unlogged(r):
            t.append(f" {r.get('count', 0)} requests not logged in detail (per-node limit)",
                     style="yellow")
            return t
        t.append(" ")
        t.append(source_of(r), style="bold")
        t.append(" -> ")
        t.append(destination_of(r), style="bold")
        t.append(f" {kind_of(r)} {target_of(r)} ")
        code = str(r.get("response_code") or "")
        t.append(code or "-", style=status_style(code))
        t.append(f" x{r.get('count', 0)}")
        t.append(
            f" mean {human_ns(r.get('duration_mean'))} max {human_ns(r.get('duration_max'))}",
            style="dim",
        )
        return t

    def records(self, recs: Iterable[Record]) -> None:
        self.emit(self.line(r) for r in recs)


# name, fixed width or None (flexible: minimum width, share of the rest), right-justified,
# drop order when the terminal is narrow (0 = never dropped)
_COLUMNS: Final[tuple[tuple[str, int | None, int, int, bool, int], ...]] = (
    ("TIME", 8, 0, 0, False, 0),
    ("SOURCE", None, 14, 24, False, 0),
    ("DESTINATION", None, 16, 28, False, 0),
    ("METHOD", 6, 0, 0, False, 0),
    ("CODE", 4, 0, 0, False, 0),
    ("PATH", None, 12, 48, False, 0),
    ("REQS", 6, 0, 0, True, 0),
    ("MEAN", 7, 0, 0, True, 2),
    ("MAX", 7, 0, 0, True, 1),
)
_GAP: Final = 1


def column_widths(total: int) -> list[int]:
    """Widths of the table columns for a terminal `total` characters wide; 0 = column hidden.
    Optional columns are hidden first when the flexible ones would fall under their minimum."""
    shown = list(_COLUMNS)
    while True:
        fixed = sum(c[1] or c[2] for c in shown) + _GAP * (len(shown) - 1)
        droppable = [c for c in shown if c[5]]
        if fixed <= total or not droppable:
            break
        shown.remove(min(droppable, key=lambda c: c[5]))
    fixed = sum(c[1] or c[2] for c in shown) + _GAP * (len(shown) - 1)
    rest = max(total - fixed, 0)
    flex = [c for c in shown if c[1] is None]
    shares = sum(c[3] for c in flex)
    extra = {c[0]: rest * c[3] // shares for c in flex}
    extra[flex[-1][0]] += rest - sum(extra.values())
    return [0 if c not in shown else (c[1] if c[1] is not None else c[2] + extra[c[0]])
            for c in _COLUMNS]


def _fit(text: str, width: int, right: bool, name: bool = False) -> str:
    """`text` padded or cut to `width`. A `name` (ns/name:port) loses its namespace first, then
    its middle, so the start of the workload or Service name stays readable."""
    if len(text) > width:
        if width <= 1:
            return text[:width]
        if name:
            slash = text.find("/")
            if slash >= 0:
                text = "\u2026" + text[slash:]
                if len(text) <= width:
                    return text.rjust(width) if right else text.ljust(width)
                text = text[2:]
            head = (width - 1) * 2 // 3
            tail = width - 1 - head
            return text[:head] + "\u2026" + text[len(text) - tail:]
        return text[: width - 1] + "\u2026"
    return text.rjust(width) if right else text.ljust(width)


def path_of(rec: Record) -> str:
    """The URL without its host part when the host names the destination Service (the table
    shows the destination already); else the whole URL (or the TLS server name)."""
    url = str(rec.get("url") or "")
    svc = str(rec.get("dest_service_name") or "")
    slash = url.find("/")
    if svc and slash > 0 and url.startswith(svc):
        return safe(url[slash:])
    return target_of(rec)


class TablePrinter(_HumanPrinter):
    """Fixed-width columns computed once, so a streamed table (with `--follow`) keeps its
    columns aligned. On a terminal the widths fit its width and long cells end in an ellipsis;
    `wide` (the default when the output is not a terminal, or `-o wide`) sizes the columns to
    the first rows' content and never cuts a value, so `| grep` sees every full name."""

    def __init__(self, out: IO[str], err: IO[str] | None = None, *, color: bool | None = None,
                 width: int | None = None, wide: bool = False) -> None:
        super().__init__(out, err, color=color, width=width)
        self.wide = wide
        self.widths: list[int] | None = None
        self._header = True

    def start(self) -> None:
        """The header comes with the first rows (nothing is printed before an answer)."""
        self._header = True

    def _print_header(self, widths: list[int]) -> None:
        self._header = False
        header = _Line(self.color)
        first = True
        for i, col in enumerate(_COLUMNS):
            if not widths[i]:
                continue
            if not first:
                header.append(" " * _GAP)
            first = False
            header.append(_fit(col[0], widths[i], col[4]), style="bold")
        self.emit([header])

    @staticmethod
    def cells(r: Record) -> list[tuple[str, str]]:
        code = str(r.get("response_code") or "")
        return [
            (local_time(r.get("end_time"), "%H:%M:%S"), "dim"),
            (source_of(r), ""),
            (destination_of(r), ""),
            (kind_of(r), ""),
            (code or "-", status_style(code)),
            (path_of(r), ""),
            (str(r.get("count", 0)), ""),
            (human_ns(r.get("duration_mean")), ""),
            (human_ns(r.get("duration_max")), "dim"),
        ]

    def _widths_for(self, recs: Sequence[Record]) -> list[int]:
        if not self.wide:
            return column_widths(self.console.width)
        widths = [max(len(c[0]), c[1] or 0) for c in _COLUMNS]
        for r in recs:
            if is_unlogged(r):
                continue
            for i, (text, _) in enumerate(self.cells(r)):
                widths[i] = max(widths[i], len(text))
        return widths

    def row(self, r: Record, widths: list[int] | None = None) -> _Line:
        if widths is None:
            if self.widths is None:
                self.widths = self._widths_for([r])
            widths = self.widths
        t = _Line(self.color)
        if is_unlogged(r):
            t.append(_fit(local_time(r.get("end_time"), "%H:%M:%S"), widths[0], False), style="dim")
            t.append(" " * _GAP)
            note = f"{r.get('count', 0)} requests on {safe(r.get('host') or '?')} not logged in detail (per-node limit)"
            t.append(note, style="yellow")
            return t
        first = True
        for i, ((text, style), col) in enumerate(zip(self.cells(r), _COLUMNS, strict=True)):
            if not widths[i]:
                continue
            if not first:
                t.append(" " * _GAP)
            first = False
            if self.wide:  # padded, never cut; the last column is not padded
                cell = text if i == len(_COLUMNS) - 1 else (
                    text.rjust(widths[i]) if col[4] else text.ljust(widths[i]))
            else:
                cell = _fit(text, widths[i], col[4], name=col[0] in ("SOURCE", "DESTINATION"))
            t.append(cell, style=style)
        return t

    def records(self, recs: Iterable[Record]) -> None:
        batch = list(recs)
        if self.widths is None and batch:
            self.widths = self._widths_for(batch)
        if self.widths is None:
            return
        rows = [self.row(r, self.widths) for r in batch]
        if rows and self._header:
            self._print_header(self.widths)
        self.emit(rows)


def _isatty(out: IO[str]) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def make_printer(
    fmt: str,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    *,
    color: bool | None = None,
    width: int | None = None,
) -> Printer:
    out = out if out is not None else sys.stdout
    if fmt == "jsonl":
        return JsonlPrinter(out, err)
    if fmt == "json":
        return JsonPrinter(out, err)
    if fmt == "compact":
        return CompactPrinter(out, err, color=color, width=width)
    if fmt in ("table", "wide"):
        wide = fmt == "wide" or (width is None and not _isatty(out))
        return TablePrinter(out, err, color=color, width=width, wide=wide)
    raise ValueError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")
