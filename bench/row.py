from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    """One line of the benchmark table."""

    what: str
    measured: str
    baseline: str = "-"
    target: str = "-"
    met: bool | None = None
