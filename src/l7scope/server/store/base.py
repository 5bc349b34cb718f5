"""The Store interface every backend implements, and the value types it exchanges."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from l7scope.contracts.selector import Node
from l7scope.contracts.timerange import TimeRange
from l7scope.server.columns import ColumnBatch
from l7scope.server.store.selector_sql import SqlParams


class StoreError(RuntimeError):
    """The store failed (connection, disk, server): the caller may retry (HTTP 503)."""


@dataclass(frozen=True)
class Filter:
    """Which records a query reads.

    `namespaces` is the reader's scope (server/auth.Principal.namespaces): None reads every
    namespace; a set lets through only records whose every named namespace is in it, and no
    `unlogged` record (sql.where renders it outside, and ANDed with, the user's selector)."""

    time_range: TimeRange
    selector: Node | None = None
    exclude_unlogged: bool = False
    namespaces: frozenset[str] | None = None


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool


@dataclass(frozen=True)
class SearchQuery:
    filter: Filter
    sort: tuple[Sort, ...]
    limit: int
    offset: int


@dataclass
class SearchResult:
    total_hits: int
    total_requests: int
    hits: list[dict[str, Any]]


@dataclass(frozen=True)
class ExprKey:
    """A grouping key computed in SQL from allow-listed columns (e.g. a service-graph node id).
    `render` returns the SQL text, binding any values through the given SqlParams."""

    name: str
    render: Callable[[SqlParams], str]


#: A grouping key: a column name, "response_class", "time:<interval seconds>", or an ExprKey.
GroupKey = str | ExprKey


@dataclass
class GroupRow:
    """Sums of one group of records."""

    key: tuple[Any, ...]
    records: int
    count: int
    bytes_in: int
    bytes_out: int
    duration_weighted_sum: int  # sum(duration_mean * count), ns
    duration_min: int  # min of duration_mean
    duration_max: int
    errors: int  # requests with a 4xx/5xx code
    hist: dict[int, int] = field(default_factory=dict)  # merged duration_hist


@dataclass
class StoreStats:
    kind: str
    location: str
    cluster: str | None
    records: int
    oldest_end_time: int | None
    newest_end_time: int | None


class Store(Protocol):
    kind: str

    def insert(self, batch: ColumnBatch) -> None:
        """Store a batch of records (columns); all or nothing where the engine allows."""
        ...

    def insert_once(self, batch_id: str, batch: ColumnBatch, now: int) -> bool:
        """Store a batch unless `batch_id` was stored before (persistently); False if duplicate."""
        ...

    def insert_batches(self, batch_id: str | None, batches: Iterable[ColumnBatch], now: int) -> bool:
        """Store the batches `batches` yields (one body decoded piece by piece, consumed only after
        the duplicate check), as one transaction where the engine has them, under `batch_id`
        unless it was stored before (then nothing is consumed: False). No id: no check."""
        ...

    def search(self, q: SearchQuery) -> SearchResult: ...

    def group(self, flt: Filter, keys: Sequence[GroupKey], with_hist: bool) -> list[GroupRow]:
        """Sums per group of `keys` (all groups; callers sort and cut)."""
        ...

    def delete_before(self, cutoff: int) -> None:
        """Remove records with end_time < cutoff, and batch ids received before it."""
        ...

    def stats(self) -> StoreStats: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


#: Column layout of the rows `server.graph.build_merged` takes (a GraphStore computes them, see
#: DuckDBStore.graph_stats): the row kind (below), an integer edge key, the edge's two ends (node
#: ids for a traffic edge; service node id and backend for a backend edge; only on the edge's own
#: row), the edge kind (0 traffic, 1 backend), response class, method, url, then the sums, the
#: mean duration (sum(duration_mean * count) // count) and the p50/p99 latency *bucket* indexes.
#: An edge's own row names its class when it has only one (else NULL), and its route when it has
#: only one (MERGED_TOTAL_ROUTE): that class's or route's stats are the edge's, so they get no row.
MERGED_CLASS: Final = 0  # one row per edge and response class, for edges with several classes
MERGED_TOTAL: Final = 1  # one row per edge
MERGED_ROUTE: Final = 2  # per traffic edge and (method, url): its top_routes busiest, busiest first
MERGED_TOTAL_ROUTE: Final = 3  # the row of an edge with exactly one route (method, url)

MergedRow = tuple[Any, ...]


#: The file formats an export is written in (docs/api.md, "Export").
EXPORT_FORMATS: Final = ("parquet", "jsonl")


@runtime_checkable
class ExportStore(Protocol):
    """A store that writes the records a filter selects to a file, in the engine's own writer."""

    def export(self, flt: Filter, fmt: str, path: str) -> None:
        """Write the table's columns (scalars, then hist_b/hist_c) of the records `flt` selects,
        ordered by end_time, to `path` (which must not exist) as `fmt` (EXPORT_FORMATS)."""
        ...


@runtime_checkable
class GraphStore(Protocol):
    """A store that sums the service graph itself (one statement) instead of `group` rows."""

    def graph_stats(self, flt: Filter, expanded: Collection[str], top_routes: int) -> list[MergedRow]:
        """The graph's sums per edge, edge and class, and route, in the MergedRow layout above."""
        ...
