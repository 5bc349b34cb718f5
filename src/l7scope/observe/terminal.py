"""Terminal conventions the client commands share: `--color auto|always|never` with `NO_COLOR`,
and `--since/--until` values checked by the CLI (human units: `90s`, `5m`, `1h30m`, `2d`,
`now-15m`, epoch seconds, ISO 8601), so a bad value is a usage error (exit 2) with a hint,
never a server error."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import click

from l7scope.contracts.timerange import TimeRangeError, parse_time

COLOR_CHOICES: Final = ("auto", "always", "never")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"(?:(\d{1,9})([smhdw]))+")
_PART: Final = re.compile(r"(\d{1,9})([smhdw])")
TIME_HINT: Final = "use a duration back from now (30s, 5m, 1h30m, 2d), now-15m, epoch seconds or ISO 8601"


def use_color(choice: str | None, isatty: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether to colour: `always`/`never` win; `auto` colours a terminal unless `NO_COLOR`
    is set to a non-empty value (https://no-color.org)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    env = os.environ if env is None else env
    return isatty and not env.get("NO_COLOR")


_NO_COLOR_META: Final = "l7scope.no_color"


def _remember_no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_NO_COLOR_META] = True


def _color_value(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return "never" if ctx.meta.get(_NO_COLOR_META) else value


def color_option(fn: Any) -> Any:
    """`--color [auto|always|never]` (a bare `--color` = always) and `--no-color` (= never);
    the command gets `color` as one of COLOR_CHOICES."""
    fn = click.option("--no-color", is_flag=True, is_eager=True, expose_value=False,
                      callback=_remember_no_color, help="Same as --color never.")(fn)
    return click.option(
        "--color", type=click.Choice(COLOR_CHOICES), is_flag=False, flag_value="always",
        default="auto", show_default=True, callback=_color_value,
        help="Colours: auto (on a terminal, unless NO_COLOR is set), always, never.")(fn)


def duration_seconds(text: str) -> int | None:
    """`1h30m` -> 5400; None when `text` is not a duration."""
    t = text.strip().replace(" ", "")
    if not _DURATION.fullmatch(t):
        return None
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(t))


def time_value(text: str | None) -> str | None:
    """A `--since/--until` value as the API takes it: durations become `now-<N>s`; `now...`,
    epoch seconds and ISO 8601 pass through."""
    if text is None:
        return None
    secs = duration_seconds(text)
    return f"now-{secs}s" if secs is not None else text.strip()


class TimeParam(click.ParamType[str]):
    """A `--since/--until` value, checked here; the value stays text (resolved per query)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        converted = time_value(text) or ""
        try:
            parse_time(converted, time.time())
        except TimeRangeError:
            self.fail(f"{text!r} is not a time: {TIME_HINT}", param, ctx)
        return text


class DurationParam(click.ParamType[int]):
    """A window such as `--window`: a duration (`30s`, `5m`, `1h30m`) or plain seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        secs = int(text) if text.isdigit() else duration_seconds(text)
        if secs is None or secs <= 0:
            self.fail(f"{text!r} is not a duration: use seconds or 30s, 5m, 1h30m", param, ctx)
        return secs
