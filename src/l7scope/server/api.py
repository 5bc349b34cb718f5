"""The HTTP shell (Starlette): routes of docs/api.md, JSON errors, /openapi.json, the UI mount.

Handlers are module-level functions (Starlette style); the objects they share live on
`app.state` (see `AppState`), and `create_app` only assembles them. Blocking store calls run in
Starlette's thread pool; a `StoreError` becomes 503 in one place (`_store_call`). Every answer is
JSON except /metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from l7scope import __version__
from l7scope.contracts import api as paths
from l7scope.contracts import nodestats
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH, MAX_BODY_BYTES
from l7scope.server import export, login
from l7scope.server.access import DEFAULT_ALLOWED_HOSTS, AccessMiddleware, HostPolicy
from l7scope.server.auth import Authenticator, Principal, Sessions
from l7scope.server.cancel import QueryCancelled, run_cancellable
from l7scope.server.ingest import BadBatchId, Ingestor, Sink, check_batch_id
from l7scope.server.limits import (
    MAX_JSON_DEPTH,
    MAX_QUERY_BODY_BYTES,
    BodyError,
    BodyGate,
    Limits,
    check_encoding,
    gunzip,
    too_deep,
)
from l7scope.server.metrics import Metrics
from l7scope.server.openapi import schema as openapi_schema
from l7scope.server.query import QueryService, RequestError
from l7scope.server.store.base import Store, StoreError
from l7scope.server.vendor import vendor_route

log = logging.getLogger(__name__)
UI_DIR = Path(__file__).parent / "ui"
_encoder = msgspec.json.Encoder()
T = TypeVar("T")


class AppState(Protocol):
    """What `create_app` puts on `app.state`, typed for the handlers."""

    store: Store
    queries: QueryService
    ingestor: Ingestor
    metrics: Metrics
    clock: Callable[[], float]
    started: float
    retention_s: int | None
    on_shutdown: Callable[[], None] | None
    archive_status: Callable[[], dict[str, object]] | None
    authenticator: Authenticator
    sessions: Sessions
    blocking_auth: bool
    limits: Limits
    gate: BodyGate


def state(request: Request) -> AppState:
    return cast(AppState, request.app.state)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class _StoreDown(Exception):
    """A store call failed; carries the 503 answer."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _error(status: int, code: str, message: str) -> JSON:
    return JSON(paths.error_body(code, message), status_code=status)


async def _store_call(fn: Callable[[], T]) -> T:
    """Run a blocking store call in the thread pool; a StoreError becomes the 503 answer."""
    try:
        return await run_in_threadpool(fn)
    except StoreError as e:
        raise _StoreDown(_error(503, "store_unavailable", str(e))) from e


async def _store_query(request: Request, fn: Callable[[], T], timeout_s: float) -> T:
    """`_store_call` for a query: cancelled (QueryCancelled) after `timeout_s` or when the client
    disconnects (server/cancel.py)."""
    try:
        return await run_cancellable(fn, timeout_s, request.is_disconnected)
    except StoreError as e:
        raise _StoreDown(_error(503, "store_unavailable", str(e))) from e


async def _json_body(request: Request, timeout_s: float, limit: int = MAX_QUERY_BODY_BYTES) -> object:
    body = await _read_body(request, limit, timeout_s)
    if too_deep(body):
        raise RequestError("bad_request", f"the body nests JSON more than {MAX_JSON_DEPTH} levels deep")
    try:
        return msgspec.json.decode(body)
    except ValueError as e:  # msgspec.DecodeError, UnicodeDecodeError
        raise RequestError("bad_request", f"the body is not valid JSON: {e}") from None


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, which must arrive within `timeout_s` (a slow sender cannot hold a slot)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError("body_too_large", f"body is {declared} bytes, over the {limit}-byte limit", status=413)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError("body_too_large", f"body is over the {limit}-byte limit", status=413)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError("body_timeout", f"the body did not arrive within {timeout_s:g} s",
                           status=408) from None
    return b"".join(chunks)


# --- handlers ---------------------------------------------------------------------------


async def bulk(request: Request) -> Response:
    st = state(request)
    if not await st.gate.acquire():  # at most limits.max_bodies_in_flight bodies at once
        st.metrics.inc("bodies_busy")
        busy = _error(503, "busy", f"{st.limits.max_bodies_in_flight} bulk bodies are being stored; retry")
        busy.headers["Retry-After"] = "1"
        return busy
    try:
        return await _bulk(request, st)
    finally:
        st.gate.release()


async def _bulk(request: Request, st: AppState) -> Response:
    try:
        batch_id = check_batch_id(request.headers.get(BATCH_ID_HEADER))
        encoding = check_encoding(request.headers.get("content-encoding"))
        body = await _read_body(request, MAX_BODY_BYTES, st.limits.body_timeout_s)
        if encoding == "gzip":
            body = await run_in_threadpool(gunzip, body, MAX_BODY_BYTES)
    except BadBatchId as e:
        st.metrics.inc("bodies_rejected")
        return _error(400, "bad_request", str(e))
    except BodyError as e:
        st.metrics.inc("bodies_rejected")
        return _error(e.status, e.code, e.message)
    except RequestError as e:
        st.metrics.inc("bodies_rejected")
        return JSON(e.to_json(), status_code=e.status)
    try:
        result, rejected_total = await _store_call(lambda: st.ingestor.ingest(body, batch_id))
    except _StoreDown as e:
        log.warning("bulk ingest failed: %s", e.__cause__)
        return e.response
    return JSON(msgspec.structs.replace(result, rejected_total=rejected_total))


async def node_stats(request: Request) -> Response:
    """A node agent's report of its node's counters (contracts/nodestats.py), kept for /metrics."""
    st = state(request)
    try:
        body = await _read_body(request, nodestats.MAX_BODY_BYTES, st.limits.body_timeout_s)
        report = nodestats.decode(body)
    except RequestError as e:
        return JSON(e.to_json(), status_code=e.status)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        return _error(400, "bad_request", f"node stats report: {e}")
    if not st.metrics.nodes.put(report):
        return _error(429, "too_many_nodes",
                      f"the server keeps reports of at most {st.metrics.nodes.max_nodes} nodes")
    return JSON({"node": report.node, "stored": True})


def _scope(request: Request) -> frozenset[str] | None:
    """The namespaces the caller may read (None: all), from the principal access.py left."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # access.py lets no query through without one; be strict anyway
        return frozenset()
    return principal.namespaces


def _cluster_wide(request: Request) -> Response | None:
    """403 unless the caller reads every namespace (server-wide counters name no namespace
    but count all of them, docs/security.md)."""
    if _scope(request) is None:
        return None
    return _error(403, "forbidden", "this route needs a reader of every namespace "
                                    "(`get pods` cluster-wide)")


QueryFn = Callable[[QueryService, object, "frozenset[str] | None"], dict[str, Any]]


async def _query(request: Request, kind: str, fn: QueryFn) -> Response:
    st = state(request)
    t0 = time.perf_counter()
    namespaces = _scope(request)
    try:
        body = await _json_body(request, st.limits.body_timeout_s)
        out = await _store_query(request, lambda: fn(st.queries, body, namespaces),
                                 st.limits.statement_timeout_s)
    except QueryCancelled as e:  # statement timeout, or the client left (server/cancel.py)
        st.metrics.query(kind, False, time.perf_counter() - t0)
        st.metrics.inc("queries_timed_out" if e.reason == "timeout" else "queries_cancelled")
        log.warning("%s query cancelled: %s", kind, e)
        return _error(503, "query_timeout" if e.reason == "timeout" else "cancelled", str(e))
    except RequestError as e:
        st.metrics.query(kind, False, time.perf_counter() - t0)
        return JSON(e.to_json(), status_code=e.status)
    except _StoreDown as e:
        st.metrics.query(kind, False, time.perf_counter() - t0)
        return e.response
    st.metrics.query(kind, True, time.perf_counter() - t0)
    return JSON(out)


async def search(request: Request) -> Response:
    return await _query(request, "search", QueryService.search)


async def aggregation(request: Request) -> Response:
    return await _query(request, "aggregation", QueryService.aggregation)


async def servicegraph(request: Request) -> Response:
    return await _query(request, "servicegraph", QueryService.servicegraph)


async def export_logs(request: Request) -> Response:
    """The records of a selector and time range as one Parquet or JSON-lines file the store's
    engine writes to a temporary file, streamed back and then deleted (server/export.py)."""
    st = state(request)
    t0 = time.perf_counter()
    namespaces = _scope(request)
    try:
        body = await _json_body(request, st.limits.body_timeout_s)
        req = export.parse(st.queries, body, namespaces)
        path = await _store_query(request, lambda: st.queries._run(lambda: export.write(st.store, req)),
                                  st.limits.statement_timeout_s)
    except NotImplementedError as e:
        return _error(501, "not_implemented", str(e))
    except QueryCancelled as e:
        st.metrics.query("export", False, time.perf_counter() - t0)
        st.metrics.inc("queries_timed_out" if e.reason == "timeout" else "queries_cancelled")
        return _error(503, "query_timeout" if e.reason == "timeout" else "cancelled", str(e))
    except RequestError as e:
        st.metrics.query("export", False, time.perf_counter() - t0)
        return JSON(e.to_json(), status_code=e.status)
    except _StoreDown as e:
        st.metrics.query("export", False, time.perf_counter() - t0)
        return e.response
    st.metrics.query("export", True, time.perf_counter() - t0)
    return FileResponse(path, media_type=export.MEDIA_TYPES[req.format],
                        filename=f"l7logs-{req.filter.time_range.start}-{req.filter.time_range.end}.{req.format}",
                        background=BackgroundTask(export.remove, path))


async def healthz(request: Request) -> Response:
    try:
        await _store_call(state(request).store.ping)
    except _StoreDown as e:
        return JSON({"status": "unavailable", "error": str(e.__cause__)}, status_code=503)
    return JSON({"status": "ok"})


async def status(request: Request) -> Response:
    if (denied := _cluster_wide(request)) is not None:
        return denied
    st = state(request)
    try:
        stats = await _store_call(st.store.stats)
    except _StoreDown as e:
        return e.response
    c = dict(st.metrics.counters)
    q = dict(st.metrics.queries)
    m = st.metrics
    return JSON({
        "version": __version__, "started_at": int(st.started), "uptime_s": round(st.clock() - st.started, 1),
        "store": {"kind": stats.kind, "location": stats.location, "cluster": stats.cluster,
                  "records": stats.records, "oldest_end_time": stats.oldest_end_time,
                  "newest_end_time": stats.newest_end_time},
        "retention_s": st.retention_s,
        "ingest": {"requests": c["ingest_requests"], "records_accepted": c["records_accepted"],
                   "records_rejected": c["records_rejected"], "duplicate_batches": c["duplicate_batches"],
                   "bodies_rejected": c["bodies_rejected"], "unlogged_requests": c["unlogged_requests"],
                   "unknown_fields_ignored": c["unknown_fields_ignored"], "bodies_busy": c["bodies_busy"]},
        "queries": {
            **{k: sum(n for (kk, _), n in q.items() if kk == k) for k in ("search", "aggregation", "servicegraph", "export")},
            "errors": sum(n for (_, r), n in q.items() if r == "error"),
            "timed_out": c["queries_timed_out"], "cancelled": c["queries_cancelled"],
        },
        "retention": {"runs": m.retention_runs,
                      "last_run": None if m.retention_last_run is None else int(m.retention_last_run),
                      "last_cutoff": m.retention_cutoff},
        "archive": None if st.archive_status is None else st.archive_status(),
        "nodes": st.metrics.nodes.status(),
    })


async def prometheus(request: Request) -> Response:
    if (denied := _cluster_wide(request)) is not None:
        return denied
    st = state(request)

    def records() -> int | None:
        return st.store.stats().records

    text = await run_in_threadpool(st.metrics.render, records)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return JSON(openapi_schema())


async def http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    msg = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return _error(code, "not_found" if code == 404 else "bad_request" if code < 500 else "internal", str(msg))


async def internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, "internal", f"internal error: {type(exc).__name__}")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    try:
        yield
    finally:
        on_shutdown = cast(AppState, app.state).on_shutdown
        if on_shutdown is not None:
            on_shutdown()


ROUTES: list[BaseRoute] = [
    Route(BULK_PATH, bulk, methods=["POST"]),
    Route(nodestats.NODE_STATS_PATH, node_stats, methods=["POST"]),
    Route(paths.SEARCH_PATH, search, methods=["POST"]),
    Route(paths.AGGREGATION_PATH, aggregation, methods=["POST"]),
    Route(paths.SERVICEGRAPH_PATH, servicegraph, methods=["POST"]),
    Route(paths.EXPORT_PATH, export_logs, methods=["POST"]),
    Route(paths.STATUS_PATH, status, methods=["GET"]),
    Route(paths.HEALTHZ_PATH, healthz, methods=["GET"]),
    Route(paths.METRICS_PATH, prometheus, methods=["GET"]),
    Route(paths.OPENAPI_PATH, openapi, methods=["GET"]),
    *login.ROUTES,
]


def create_app(store: Store, *, auth: Authenticator, retention_s: int | None = None,
               metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
               ui_dir: Path | None = UI_DIR, on_shutdown: Callable[[], None] | None = None,
               allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS,
               sessions: Sessions | None = None, blocking_auth: bool = False,
               limits: Limits | None = None, sink: Sink | None = None,
               archive_status: Callable[[], dict[str, object]] | None = None) -> Starlette:
    """Assemble the app: the routes, the shared objects on `app.state`, the error handlers.

    `auth` decides who may call it (server/auth.py); every route but /healthz, the login
    routes and the page's files needs a credential (server/access.py, the outermost layer)."""
    routes = list(ROUTES)
    if ui_dir is not None and ui_dir.is_dir():
        routes.append(vendor_route())  # the page's npm packages at /vendor/ (l7scope.server.vendor)
        routes.append(Mount("/", app=StaticFiles(directory=str(ui_dir), html=True), name="ui"))
    sessions = sessions or Sessions()
    access = Middleware(AccessMiddleware, authenticator=auth, sessions=sessions,
                        hosts=HostPolicy(allowed_hosts), blocking_auth=blocking_auth)
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[access],
                    exception_handlers={HTTPException: http_error, Exception: internal})
    metrics = metrics or Metrics()
    st = cast(AppState, app.state)
    st.store, st.metrics, st.clock = store, metrics, clock
    st.queries = QueryService(store, clock)
    st.ingestor = Ingestor(store, metrics, clock, sink)
    st.started = clock()
    st.retention_s = retention_s
    st.on_shutdown = on_shutdown
    st.archive_status = archive_status
    st.authenticator, st.sessions, st.blocking_auth = auth, sessions, blocking_auth
    st.limits = limits or Limits()
    st.gate = BodyGate(st.limits.max_bodies_in_flight, st.limits.body_wait_s)
    return app
