"""The connection seam of the ClickHouse store: one small interface, two engines.

`NativeConnection` talks to a ClickHouse server over the native protocol (clickhouse-driver);
`ChdbConnection` runs the same statements in-process on chDB's embedded current ClickHouse engine
(`chdb-core`, the contract suite's "ClickHouse of today"). The store writes `%(name)s`
placeholders; both engines bind them with clickhouse-driver's own client-side escaping (the
native client does it inside `execute`, chDB gets the same `escape_params` output), so no value
is ever pasted into SQL text by hand. Inserts send columns: the native client in its binary
column format, chDB as a JSON document after `FORMAT JSONCompactColumns` (data, parsed by the
format reader, never by the SQL parser).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from clickhouse_driver.util.escape import escape_params

_SETTING = re.compile(r"[a-z_][a-z0-9_]*")


class EngineError(Exception):
    """A statement failed on either engine; `code` is ClickHouse's error code when known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Connection(Protocol):
    def execute(self, text: str, params: dict[str, object] | None = None,
                settings: dict[str, int] | None = None) -> list[tuple[Any, ...]]: ...

    def insert_columns(self, text: str, columns: Sequence[Sequence[Any]],
                       settings: dict[str, int | str] | None = None) -> None:
        """`text` is `INSERT INTO t (c1, ...) VALUES`; one sequence per column."""
        ...

    def disconnect(self) -> None: ...


class NativeConnection:
    """clickhouse-driver's Client; driver and socket errors become EngineError."""

    def __init__(self, args: dict[str, Any]) -> None:
        self._client = Client(**args)

    def execute(self, text: str, params: dict[str, object] | None = None,
                settings: dict[str, int] | None = None) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = self._client.execute(text, params or {}, settings=settings or {})
            return rows
        except ch_errors.ServerException as e:
            raise EngineError(e.message, e.code) from e
        except (ch_errors.Error, OSError, EOFError) as e:
            raise EngineError(str(e)) from e

    def insert_columns(self, text: str, columns: Sequence[Sequence[Any]],
                       settings: dict[str, int | str] | None = None) -> None:
        try:
            self._client.execute(text, list(columns), columnar=True, settings=settings or {})
        except ch_errors.ServerException as e:
            raise EngineError(e.message, e.code) from e
        except (ch_errors.Error, OSError, EOFError) as e:
            raise EngineError(str(e)) from e

    def iter_rows(self, text: str, params: dict[str, object],
                  settings: dict[str, int] | None = None) -> Iterator[tuple[Any, ...]]:
        """Rows as the server sends them, block by block (bounded memory)."""
        try:
            yield from self._client.execute_iter(text, params, settings=settings or {})
        except ch_errors.ServerException as e:
            raise EngineError(e.message, e.code) from e
        except (ch_errors.Error, OSError, EOFError) as e:
            raise EngineError(str(e)) from e

    def disconnect(self) -> None:
        self._client.disconnect()


def _settings_clause(settings: dict[str, Any] | None) -> str:
    if not settings:
        return ""
    parts = []
    for k, v in settings.items():
        if not _SETTING.fullmatch(k):
            raise ValueError(f"not a setting name: {k!r}")
        parts.append(f"{k} = {escape_params({'v': v}, None)['v']}")
    return " SETTINGS " + ", ".join(parts)


_CODE = re.compile(r"Code: (\d+)")


class ChdbConnection:
    """chDB's in-process engine on a data directory (one per process: chDB allows one open
    directory). Results come back as JSONCompact with 64-bit integers as JSON numbers."""

    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        try:
            import chdb
        except ImportError as e:
            raise EngineError("chDB is not installed: pip install 'chdb-core==26.9.0' "
                              "(the version pyproject.toml's dev extra pins)") from e

        self._chdb = chdb
        self._con = chdb.connect(path)

    def _run(self, text: str, fmt: str) -> Any:
        try:
            with self._lock:
                return self._con.query(text, fmt)
        except Exception as e:  # chdb raises RuntimeError/ChdbError carrying "Code: N. ..."
            m = _CODE.search(str(e))
            raise EngineError(str(e), int(m.group(1)) if m else None) from e

    def execute(self, text: str, params: dict[str, object] | None = None,
                settings: dict[str, int] | None = None) -> list[tuple[Any, ...]]:
        if params:
            text = text % escape_params(params, None)
        lead = text.lstrip().split(None, 1)[0].upper()
        if lead not in ("SELECT", "WITH"):
            self._run(text, "CSV")
            return []
        res = self._run(text + _settings_clause(
            {**(settings or {}), "output_format_json_quote_64bit_integers": 0,
             "output_format_json_quote_64bit_floats": 0}), "JSONCompact")
        raw = res.bytes() if hasattr(res, "bytes") else bytes(res)
        if not raw.strip():
            return []
        return [tuple(r) for r in json.loads(raw)["data"]]

    def insert_columns(self, text: str, columns: Sequence[Sequence[Any]],
                       settings: dict[str, int | str] | None = None) -> None:
        head = text.strip()
        if not head.upper().endswith(" VALUES"):
            raise ValueError("insert_columns takes 'INSERT INTO t (...) VALUES'")
        head = head[: -len("VALUES")].rstrip()
        body = json.dumps([list(c) for c in columns], ensure_ascii=True)
        self._run(f"{head}{_settings_clause(settings)} FORMAT JSONCompactColumns\n{body}", "CSV")

    def into_outfile(self, text: str, params: dict[str, object], path: str, fmt: str) -> None:
        """SELECT ... INTO OUTFILE path FORMAT fmt: the engine writes the file."""
        if fmt not in ("Parquet", "JSONEachRow"):
            raise ValueError(f"not an export format: {fmt!r}")
        text = text % escape_params(params, None)
        target = escape_params({"f": path}, None)["f"]
        self._run(f"{text} INTO OUTFILE {target} FORMAT {fmt}", "CSV")

    def disconnect(self) -> None:
        self._con.close()
