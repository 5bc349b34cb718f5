"""The query service: validate a JSON request body, run it on the store, shape the answer.

Transport-free (api.py adds HTTP). Every problem with a request raises `RequestError` with the
error code, message and, for selectors, the position and field of docs/api.md.

Each endpoint takes the caller's `namespaces` (server/auth.Principal.namespaces): None for a
cluster-wide reader, else the namespaces it may read. It goes into every Filter this service
builds (records, totals, groups, the graph and its unlogged count), never through the body.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from l7scope.contracts import latency, selector
from l7scope.contracts.api import error_body
from l7scope.contracts.fields import resolve
from l7scope.contracts.gcpause import gc_paused
from l7scope.contracts.record import TYPE_UNLOGGED
from l7scope.contracts.timerange import TimeRange, TimeRangeError
from l7scope.contracts.timerange import resolve as resolve_time
from l7scope.server import graph
from l7scope.server.store.base import Filter, GraphStore, SearchQuery, Sort, Store

MAX_GROUP_KEYS: Final = 8
PSEUDO_KEYS: Final = ("time", "response_class")


class RequestError(ValueError):
    def __init__(self, code: str, message: str, position: int | None = None,
                 field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.position, self.field, self.status = code, message, position, field, status

    def to_json(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.position, self.field)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


M = TypeVar("M", bound=_Model)
T = TypeVar("T")


class SortBy(_Model):
    field: str
    descending: bool = False


class TimeRangeBody(_Model):
    from_: int | float | str | None = Field(default=None, alias="from")
    to: int | float | str | None = None


class SearchBody(_Model):
    selector: str | None = None
    time_range: TimeRangeBody | None = None
    page_size: int = Field(default=100, ge=1, le=1000)
    page_num: int = Field(default=0, ge=0, le=1_000_000)
    sort_by: list[SortBy] = Field(default_factory=lambda: [SortBy(field="end_time", descending=True)],
                                  max_length=8)


class AggregationBody(_Model):
    selector: str | None = None
    time_range: TimeRangeBody | None = None
    group_by: list[str] = Field(default_factory=list, max_length=MAX_GROUP_KEYS)
    interval: int | None = Field(default=None, ge=1, le=86400 * 366)
    limit: int = Field(default=100, ge=1, le=10_000)
    order_by: Literal["count", "records", "bytes_in", "bytes_out", "duration_max",
                      "duration_mean", "errors", "time"] = "count"


class GraphBody(_Model):
    selector: str | None = None
    time_range: TimeRangeBody | None = None
    expand: list[str] = Field(default_factory=list, max_length=1000)
    top_routes: int = Field(default=5, ge=0, le=50)


def _validate(model: type[M], body: object) -> M:
    if not isinstance(body, dict):
        raise RequestError("bad_request", "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError("bad_request", f"{loc}: {first['msg']}") from None


class QueryService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # --- shared -------------------------------------------------------------------------

    def _time_range(self, tr: TimeRangeBody | None) -> TimeRange:
        raw: dict[str, object] = {} if tr is None else {"from": tr.from_, "to": tr.to}
        try:
            return resolve_time(raw, self.clock())
        except TimeRangeError as e:
            raise RequestError("bad_time_range", str(e)) from None

    @staticmethod
    def _selector(text: str | None) -> selector.Node | None:
        try:
            return selector.parse(text)
        except selector.SelectorError as e:
            raise RequestError(e.code, e.message, e.position, e.field) from None

    @staticmethod
    def _field(name: str, where: str) -> str:
        col = resolve(name)
        if col is None:
            raise RequestError("unknown_field", f"unknown field {name!r} in {where}", field=name)
        return col

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ValueError as e:  # the engine rejected a value (e.g. a regex): the user's input
            raise RequestError("bad_value", str(e).splitlines()[0][:300]) from None

    # --- endpoints ----------------------------------------------------------------------

    def search(self, body: object, namespaces: frozenset[str] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        req = _validate(SearchBody, body)
        tr = self._time_range(req.time_range)
        sort = tuple(Sort(self._field(s.field, "sort_by"), s.descending) for s in req.sort_by)
        q = SearchQuery(Filter(tr, self._selector(req.selector), namespaces=namespaces), sort, req.page_size,
                        req.page_num * req.page_size)
        res = self._run(lambda: self.store.search(q))
        return {
            "total_hits": res.total_hits, "total_requests": res.total_requests,
            "num_pages": -(-res.total_hits // req.page_size), "page_num": req.page_num,
            "page_size": req.page_size, "time_range": tr.to_json(),
            "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": res.hits,
        }

    def aggregation(self, body: object, namespaces: frozenset[str] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        req = _validate(AggregationBody, body)
        tr = self._time_range(req.time_range)
        keys: list[str] = []
        for name in req.group_by:
            if name == "time":
                if req.interval is None:
                    raise RequestError("bad_request", "group_by 'time' needs 'interval' (seconds)")
                keys.append(f"time:{req.interval}")
            elif name == "response_class":
                keys.append(name)
            else:
                keys.append(self._field(name, "group_by"))
        flt = Filter(tr, self._selector(req.selector), namespaces=namespaces)
        rows = self._run(lambda: self.store.group(flt, keys, True))
        groups: list[dict[str, Any]] = []
        for g in rows:
            mean = g.duration_weighted_sum // g.count if g.count else 0
            pct: dict[str, int | None] = {"p50": None, "p90": None, "p99": None}
            if g.hist:
                for q in (0.5, 0.9, 0.99):
                    v = latency.quantile(g.hist, q)
                    pct[f"p{int(q * 100)}"] = None if v is None else v * 1000
            groups.append({
                "key": dict(zip(req.group_by, g.key, strict=True)), "records": g.records,
                "count": g.count, "bytes_in": g.bytes_in, "bytes_out": g.bytes_out,
                "duration_mean": mean, "duration_min": g.duration_min, "duration_max": g.duration_max,
                **pct, "errors": g.errors, "error_rate": g.errors / g.count if g.count else 0.0,
            })
        order = req.order_by

        def sort_key(x: dict[str, Any]) -> Any:
            if order == "time":
                return x["key"].get("time", 0)
            return -x[order]

        groups.sort(key=sort_key)
        return {"total_groups": len(groups), "time_range": tr.to_json(),
                "took_ms": round((time.perf_counter() - t0) * 1000, 2), "groups": groups[: req.limit]}

    def servicegraph(self, body: object, namespaces: frozenset[str] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        req = _validate(GraphBody, body)
        tr = self._time_range(req.time_range)
        sel = self._selector(req.selector)
        flt = Filter(tr, sel, exclude_unlogged=True, namespaces=namespaces)
        expanded = set(req.expand)
        unl_sel: selector.Node = selector.Cmp("type", "=", TYPE_UNLOGGED)
        if sel is not None:
            unl_sel = selector.And((sel, unl_sel))
        unl = self._run(lambda: self.store.group(Filter(tr, unl_sel, namespaces=namespaces), [], False))
        unlogged = sum(g.count for g in unl)
        store = self.store
        with gc_paused():
            if isinstance(store, GraphStore):  # a store that sums the graph itself
                mrows = self._run(lambda: store.graph_stats(flt, expanded, req.top_routes))
                out = graph.build_merged(mrows, expanded=expanded, top_routes=req.top_routes,
                                         unlogged=unlogged)
            else:
                rows = self._run(lambda: self.store.group(flt, graph.graph_keys(expanded), True))
                out = graph.build(rows, expanded=expanded, top_routes=req.top_routes, unlogged=unlogged)
        return {"time_range": tr.to_json(), "took_ms": round((time.perf_counter() - t0) * 1000, 2), **out}
