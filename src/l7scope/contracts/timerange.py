"""Time ranges of queries: epoch seconds, ISO 8601 or `now[-<n><s|m|h|d>]`, resolved with an
injected clock. A record matches when `from < end_time <= to` (Calico's rule)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

DEFAULT_FROM: Final = "now-15m"
DEFAULT_TO: Final = "now"
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RELATIVE: Final = re.compile(r"now(?:\s*-\s*(\d{1,9})\s*([smhd]))?")
_MAX_EPOCH: Final = 2**32 - 1


class TimeRangeError(ValueError):
    pass


@dataclass(frozen=True)
class TimeRange:
    start: int  # exclusive, epoch s
    end: int  # inclusive, epoch s

    def to_json(self) -> dict[str, int]:
        return {"from": self.start, "to": self.end}


def parse_time(value: object, now: float) -> int:
    """One bound: epoch seconds (int/float), ISO 8601 text, or `now`/`now-15m`."""
    if isinstance(value, bool):
        raise TimeRangeError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        t = int(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _RELATIVE.fullmatch(text)
        if m:
            t = int(now) - (int(m.group(1)) * _UNITS[m.group(2)] if m.group(1) else 0)
        elif re.fullmatch(r"\d{1,10}", text):
            t = int(text)
        else:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            except ValueError:
                raise TimeRangeError(
                    f"not a time: {value[:60]!r} (use epoch seconds, ISO 8601 or now-15m)"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            t = int(dt.timestamp())
    else:
        raise TimeRangeError(f"not a time: {value!r}")
    return max(0, min(t, _MAX_EPOCH))


def resolve(raw: dict[str, object] | None, now: float) -> TimeRange:
    raw = raw or {}
    unknown = set(raw) - {"from", "to"}
    if unknown:
        raise TimeRangeError(f"unknown key in time_range: {sorted(unknown)[0]!r}")
    start = parse_time(raw.get("from") if raw.get("from") is not None else DEFAULT_FROM, now)
    end = parse_time(raw.get("to") if raw.get("to") is not None else DEFAULT_TO, now)
    if start > end:
        raise TimeRangeError(f"time_range.from ({start}) is after time_range.to ({end})")
    return TimeRange(start, end)
