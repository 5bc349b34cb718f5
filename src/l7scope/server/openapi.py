"""The OpenAPI 3.1 document served at /openapi.json. Request bodies are generated from the
pydantic models the server validates with (so they cannot drift); answers are described here
and checked against real answers by tests/unit/test_server_api.py."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from l7scope import __version__
from l7scope.contracts import api
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH
from l7scope.contracts.detail import DETAIL_BULK_PATH, REQUESTS_PATH
from l7scope.contracts.fields import COLUMNS
from l7scope.server.detail import RequestsBody
from l7scope.server.export import ExportBody
from l7scope.server.query import AggregationBody, GraphBody, SearchBody

_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_NINT = {"type": ["integer", "null"]}


def _obj(props: dict[str, Any], required: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = sorted(props)
    return out


def _record() -> dict[str, Any]:
    props: dict[str, Any] = {c: (_STR if k == "text" else _INT) for c, k in COLUMNS.items()}
    props["duration_hist"] = {"type": "object", "additionalProperties": _INT,
                              "description": "latency histogram: bucket index (string) -> count"}
    return _obj(props)


def _class_stats() -> dict[str, Any]:
    return _obj({"count": _INT, "bytes_in": _INT, "bytes_out": _INT, "mean_duration": _INT,
                 "min_duration": _INT, "max_duration": _INT, "p50": _NINT, "p99": _NINT})


_TIME_RANGE = _obj({"from": _INT, "to": _INT})
_ERROR = _obj({"error": {"type": "object", "required": ["code", "message"], "properties": {
    "code": _STR, "message": _STR, "position": _INT, "field": _STR}}})


_LATE_BODY: dict[str, Any] = {"408": {"description": "the body did not arrive in time",
                                      "content": {"application/json": {"schema": _ERROR}}}}


def _answers(ok: dict[str, Any], *, json: bool = True) -> dict[str, Any]:
    content = {"application/json": {"schema": ok}} if json else {"text/plain": {"schema": _STR}}
    return {
        "200": {"description": "OK", "content": content},
        "400": {"description": "bad request", "content": {"application/json": {"schema": _ERROR}}},
        "503": {"description": "store unavailable, busy (bulk: Retry-After), or query cancelled at the "
                               "statement timeout", "content": {"application/json": {"schema": _ERROR}}},
    }


def _post(summary: str, body: dict[str, Any], ok: dict[str, Any]) -> dict[str, Any]:
    return {"post": {"summary": summary, "requestBody": {"required": True, "content": {
        "application/json": {"schema": body}}}, "responses": _answers(ok) | _LATE_BODY}}


_COMPONENTS: dict[str, Any] = {}


def _model(model: type[BaseModel]) -> dict[str, Any]:
    """A request model's JSON schema with its sub-models moved to components/schemas."""
    out = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    _COMPONENTS.update(out.pop("$defs", {}))
    return out


@cache
def schema() -> dict[str, Any]:
    stats = {"type": "object", "properties": {c: {"oneOf": [_class_stats(), {"type": "null"}]}
             for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "no_response")}}
    totals = _class_stats()
    totals["properties"] |= {"errors": _INT, "error_rate": _NUM}
    totals["required"] = sorted(totals["properties"])
    node = _obj({"id": _STR, "type": _STR, "name": _STR, "namespace": {"type": ["string", "null"]},
                 "parent_id": {"type": ["string", "null"]}, "expandable": {"type": "boolean"},
                 "expanded": {"type": "boolean"}, "selector": _STR,
                 "stats": _obj({"count": _INT, "errors": _INT, "bytes_in": _INT, "bytes_out": _INT})})
    route = _obj({"method": _STR, "url": _STR, "count": _INT, "errors": _INT, "error_rate": _NUM, "p99": _NINT})
    edge = _obj({"id": _STR, "source": _STR, "target": _STR, "kind": {"enum": ["traffic", "backend"]},
                 "selector": _STR, "totals": totals, "stats": stats,
                 "top_routes": {"type": "array", "items": route}})
    group = _obj({"key": {"type": "object"}, "records": _INT, "count": _INT, "bytes_in": _INT,
                  "bytes_out": _INT, "duration_mean": _INT, "duration_min": _INT, "duration_max": _INT,
                  "p50": _NINT, "p90": _NINT, "p99": _NINT, "errors": _INT, "error_rate": _NUM})
    return {
        "openapi": "3.1.0",
        "info": {"title": "l7scope server", "version": __version__,
                 "description": "L7 records: bulk ingest, search, aggregation, service graph. See docs/api.md."},
        "paths": {
            BULK_PATH: {"post": {
                "summary": "Store NDJSON records (one L7Record per line)",
                "parameters": [{"name": BATCH_ID_HEADER, "in": "header", "required": False, "schema": _STR},
                               {"name": "Content-Encoding", "in": "header", "required": False,
                                "schema": {"type": "string", "enum": ["identity", "gzip", "x-gzip"]}}],
                "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": _STR}}},
                "responses": _answers(_obj({
                    "accepted": _INT, "duplicate": {"type": "boolean"}, "rejected_total": _INT,
                    "rejected": {"type": "array", "items": _obj({"line": _INT, "error": _STR})}})) | {
                    "413": {"description": "body (or its decompressed form) too large",
                            "content": {"application/json": {"schema": _ERROR}}},
                    "415": {"description": "unsupported Content-Encoding",
                            "content": {"application/json": {"schema": _ERROR}}}} | _LATE_BODY,
            }},
            api.SEARCH_PATH: _post(
                "Records matching a selector in a time range, sorted and paged",
                _model(SearchBody),
                _obj({"total_hits": _INT, "total_requests": _INT, "num_pages": _INT, "page_num": _INT,
                      "page_size": _INT, "time_range": _TIME_RANGE, "took_ms": _NUM,
                      "hits": {"type": "array", "items": _record()}})),
            api.AGGREGATION_PATH: _post(
                "Counts, bytes, durations and percentiles grouped by fields",
                _model(AggregationBody),
                _obj({"total_groups": _INT, "time_range": _TIME_RANGE, "took_ms": _NUM,
                      "groups": {"type": "array", "items": group}})),
            api.SERVICEGRAPH_PATH: _post(
                "Nodes and edges with L7 stats per response class, top routes, completeness",
                _model(GraphBody),
                _obj({"time_range": _TIME_RANGE, "took_ms": _NUM, "truncated": {"type": "boolean"},
                      "nodes": {"type": "array", "items": node}, "edges": {"type": "array", "items": edge},
                      "completeness": _obj({"requests_logged": _INT, "requests_unlogged": _INT,
                                            "requests_seen": _INT, "ratio": _NUM})})),
            api.EXPORT_PATH: {"post": {
                "summary": "The records of a selector and time range as one Parquet or JSON-lines file",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _model(ExportBody)}}},
                "responses": {
                    "200": {"description": "the file, written by the store's engine",
                            "content": {"application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                                        "application/x-ndjson": {"schema": _STR}}},
                    **{k: v for k, v in _answers({}).items() if k != "200"}},
            }},
            DETAIL_BULK_PATH: {"post": {
                "summary": "Store NDJSON request detail records (one DetailRecord per line, docs/detail.md)",
                "parameters": [{"name": BATCH_ID_HEADER, "in": "header", "required": False, "schema": _STR}],
                "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": _STR}}},
                "responses": _answers(_obj({
                    "accepted": _INT, "duplicate": {"type": "boolean"}, "rejected_total": _INT,
                    "rejected": {"type": "array", "items": _obj({"line": _INT, "error": _STR})}})) | _LATE_BODY,
            }},
            REQUESTS_PATH: _post(
                "Kept requests of one aggregated record, or by request id or trace id (docs/detail.md)",
                _model(RequestsBody),
                _obj({"requests": {"type": "array", "items": {"type": "object"}},
                      "truncated": {"type": "boolean"}})),
            api.STATUS_PATH: {"get": {"summary": "Server, store and counters", "responses": _answers(_obj({
                "version": _STR, "started_at": _INT, "uptime_s": _NUM, "store": {"type": "object"},
                "retention_s": _NINT, "ingest": {"type": "object"}, "queries": {"type": "object"},
                "retention": {"type": "object"}, "archive": {"type": ["object", "null"]}}))}},
            api.HEALTHZ_PATH: {"get": {"summary": "Store reachable", "responses": _answers(_obj({"status": _STR}))}},
            api.METRICS_PATH: {"get": {"summary": "Prometheus text format", "responses": _answers({}, json=False)}},
            api.OPENAPI_PATH: {"get": {"summary": "This document", "responses": _answers({"type": "object"})}},
        },
        "components": {"schemas": dict(_COMPONENTS)},
    }
