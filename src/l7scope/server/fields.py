"""The stored columns: which record fields exist, their kind, and the names queries may use."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from l7scope.contracts.record import L7Record

Kind = Literal["text", "int"]

#: The record field not stored as a plain column: split into HIST_BUCKETS / HIST_COUNTS.
HIST_FIELD: Final = "duration_hist"
HIST_BUCKETS: Final = "hist_b"
HIST_COUNTS: Final = "hist_c"

_PORTS: Final = frozenset({"source_port_num", "dest_port_num", "dest_service_port"})
_TIMES: Final = frozenset({"start_time", "end_time"})


def _kind(info: msgspec.structs.FieldInfo) -> Kind:
    return "text" if info.default is not msgspec.NODEFAULT and isinstance(info.default, str) else "int"


#: Scalar columns in schema order (every record field but the histogram), with their kind.
COLUMNS: Final[dict[str, Kind]] = {
    f.name: _kind(f) for f in msgspec.structs.fields(L7Record) if f.name != HIST_FIELD
}
#: Every stored column name, in table order.
TABLE_COLUMNS: Final[tuple[str, ...]] = (*COLUMNS, HIST_BUCKETS, HIST_COUNTS)

#: Calico's alternative names.
ALIASES: Final[dict[str, str]] = {
    "source_name_aggr": "src_name_aggr",
    "source_namespace": "src_namespace",
    "source_type": "src_type",
    "dest_service_port_num": "dest_service_port",
}


def int_width(name: str) -> Literal["u16", "u32", "u64"]:
    """Storage width of an integer column."""
    if name in _PORTS:
        return "u16"
    if name in _TIMES or name == "schema_version":
        return "u32"
    return "u64"


def resolve(name: str) -> str | None:
    """The column a query field name refers to, or None when it is not allowed."""
    name = ALIASES.get(name, name)
    return name if name in COLUMNS else None
