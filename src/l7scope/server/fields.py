"""The stored columns: the table layout of the query fields (contracts.fields) and their widths."""

from __future__ import annotations

from typing import Final, Literal

from l7scope.contracts.fields import COLUMNS

#: The histogram field (contracts.fields.HIST_FIELD) is stored as two array columns.
HIST_BUCKETS: Final = "hist_b"
HIST_COUNTS: Final = "hist_c"

_PORTS: Final = frozenset({"source_port_num", "dest_port_num", "dest_service_port"})
_TIMES: Final = frozenset({"start_time", "end_time"})

#: Every stored column name, in table order.
TABLE_COLUMNS: Final[tuple[str, ...]] = (*COLUMNS, HIST_BUCKETS, HIST_COUNTS)


def int_width(name: str) -> Literal["u16", "u32", "u64"]:
    """Storage width of an integer column."""
    if name in _PORTS:
        return "u16"
    if name in _TIMES or name == "schema_version":
        return "u32"
    return "u64"
