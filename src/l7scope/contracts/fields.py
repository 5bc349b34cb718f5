"""The record fields a query may name: their kind, Calico's alternative names, and `resolve()`.

The one owner of the field names of the selector language, `sort_by` and `group_by`
(docs/api.md): every scalar field of `contracts.record.L7Record` (the histogram is not a query
field), text or int by its default. The server's storage layout (server/fields.py) and the CLI
read them from here.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from l7scope.contracts.record import L7Record

Kind = Literal["text", "int"]

#: The record field that is not a scalar column (stored split, see server/fields.py).
HIST_FIELD: Final = "duration_hist"


def _kind(info: msgspec.structs.FieldInfo) -> Kind:
    return "text" if info.default is not msgspec.NODEFAULT and isinstance(info.default, str) else "int"


#: Scalar fields in schema order (every record field but the histogram), with their kind.
COLUMNS: Final[dict[str, Kind]] = {
    f.name: _kind(f) for f in msgspec.structs.fields(L7Record) if f.name != HIST_FIELD
}

#: Calico's alternative names.
ALIASES: Final[dict[str, str]] = {
    "source_name_aggr": "src_name_aggr",
    "source_namespace": "src_namespace",
    "source_type": "src_type",
    "dest_service_port_num": "dest_service_port",
}


def resolve(name: str) -> str | None:
    """The field a query name refers to, or None when it is not allowed."""
    name = ALIASES.get(name, name)
    return name if name in COLUMNS else None
