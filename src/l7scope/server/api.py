"""The HTTP shell (Starlette): routes of docs/api.md, JSON errors, /openapi.json, the UI mount.

Blocking store calls run in Starlette's thread pool. Every answer is JSON except /metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from l7scope import __version__
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH, MAX_BODY_BYTES
from l7scope.server.cancel import QueryCancelled, run_cancellable
from l7scope.server.ingest import BadBatchId, Ingestor, check_batch_id
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


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def _error(status: int, code: str, message: str, **extra: Any) -> JSON:
    return JSON({"error": {"code": code, "message": message, **extra}}, status_code=status)


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


def create_app(store: Store, *, retention_s: int | None = None, metrics: Metrics | None = None,
               clock: Callable[[], float] = time.time, ui_dir: Path | None = UI_DIR,
               on_shutdown: Callable[[], None] | None = None, limits: Limits | None = None) -> Starlette:
    metrics = metrics or Metrics()
    limits = limits or Limits()
    gate = BodyGate(limits.max_bodies_in_flight, limits.body_wait_s)
    queries = QueryService(store, clock)
    ingestor = Ingestor(store, metrics, clock)
    started = clock()

    async def bulk(request: Request) -> Response:
        if not await gate.acquire():
            metrics.inc("bodies_busy")
            busy = _error(503, "busy", f"{limits.max_bodies_in_flight} bulk bodies are being stored; retry")
            busy.headers["Retry-After"] = "1"
            return busy
        try:
            return await _bulk(request)
        finally:
            gate.release()

    async def _bulk(request: Request) -> Response:
        try:
            batch_id = check_batch_id(request.headers.get(BATCH_ID_HEADER))
            encoding = check_encoding(request.headers.get("content-encoding"))
            body = await _read_body(request, MAX_BODY_BYTES, limits.body_timeout_s)
            if encoding == "gzip":
                body = await run_in_threadpool(gunzip, body, MAX_BODY_BYTES)
        except BadBatchId as e:
            metrics.inc("bodies_rejected")
            return _error(400, "bad_request", str(e))
        except BodyError as e:
            metrics.inc("bodies_rejected")
            return _error(e.status, e.code, e.message)
        except RequestError as e:
            metrics.inc("bodies_rejected")
            return JSON(e.to_json(), status_code=e.status)
        try:
            result, rejected_total = await run_in_threadpool(ingestor.ingest, body, batch_id)
        except StoreError as e:
            log.warning("bulk ingest failed: %s", e)
            return _error(503, "store_unavailable", str(e))
        out = msgspec.to_builtins(result)
        out["rejected_total"] = rejected_total
        return JSON(out)

    def query_route(kind: str, fn: Callable[[object], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                body = await _json_body(request, limits.body_timeout_s)
                out = await run_cancellable(lambda: fn(body), limits.statement_timeout_s,
                                            request.is_disconnected)
            except QueryCancelled as e:
                metrics.query(kind, False, time.perf_counter() - t0)
                metrics.inc("queries_timed_out" if e.reason == "timeout" else "queries_cancelled")
                log.warning("%s query cancelled: %s", kind, e)
                return _error(503, "query_timeout" if e.reason == "timeout" else "cancelled", str(e))
            except RequestError as e:
                metrics.query(kind, False, time.perf_counter() - t0)
                return JSON(e.to_json(), status_code=e.status)
            except StoreError as e:
                metrics.query(kind, False, time.perf_counter() - t0)
                return _error(503, "store_unavailable", str(e))
            metrics.query(kind, True, time.perf_counter() - t0)
            return JSON(out)

        return handler

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(store.ping)
        except StoreError as e:
            return JSON({"status": "unavailable", "error": str(e)}, status_code=503)
        return JSON({"status": "ok"})

    async def status(request: Request) -> Response:
        try:
            st = await run_in_threadpool(store.stats)
        except StoreError as e:
            return _error(503, "store_unavailable", str(e))
        c = dict(metrics.counters)
        q = dict(metrics.queries)
        return JSON({
            "version": __version__, "started_at": int(started), "uptime_s": round(clock() - started, 1),
            "store": {"kind": st.kind, "location": st.location, "cluster": st.cluster,
                      "records": st.records, "oldest_end_time": st.oldest_end_time,
                      "newest_end_time": st.newest_end_time},
            "retention_s": retention_s,
            "ingest": {"requests": c["ingest_requests"], "records_accepted": c["records_accepted"],
                       "records_rejected": c["records_rejected"], "duplicate_batches": c["duplicate_batches"],
                       "bodies_rejected": c["bodies_rejected"], "unlogged_requests": c["unlogged_requests"],
                       "unknown_fields_ignored": c["unknown_fields_ignored"], "bodies_busy": c["bodies_busy"]},
            "queries": {
                **{k: sum(n for (kk, _), n in q.items() if kk == k) for k in ("search", "aggregation", "servicegraph")},
                "errors": sum(n for (_, r), n in q.items() if r == "error"),
                "timed_out": c["queries_timed_out"], "cancelled": c["queries_cancelled"],
            },
            "retention": {"runs": metrics.retention_runs,
                          "last_run": None if metrics.retention_last_run is None else int(metrics.retention_last_run),
                          "last_cutoff": metrics.retention_cutoff},
        })

    async def prometheus(request: Request) -> Response:
        def records() -> int | None:
            return store.stats().records

        text = await run_in_threadpool(metrics.render, records)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return JSON(openapi_schema())

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        msg = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _error(code, "not_found" if code == 404 else "bad_request" if code < 500 else "internal",
                      str(msg))

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal", f"internal error: {type(exc).__name__}")

    routes: list[BaseRoute] = [
        Route(BULK_PATH, bulk, methods=["POST"]),
        Route("/api/v1/l7/logs/search", query_route("search", queries.search), methods=["POST"]),
        Route("/api/v1/l7/logs/aggregation", query_route("aggregation", queries.aggregation), methods=["POST"]),
        Route("/api/v1/servicegraph", query_route("servicegraph", queries.servicegraph), methods=["POST"]),
        Route("/api/v1/status", status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    if ui_dir is not None and ui_dir.is_dir():
        routes.append(vendor_route())  # the page's npm packages at /vendor/ (l7scope.server.vendor)
        routes.append(Mount("/", app=StaticFiles(directory=str(ui_dir), html=True), name="ui"))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if on_shutdown is not None:
                on_shutdown()

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: not_found, Exception: internal})
