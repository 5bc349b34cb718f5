"""HTTP client for the server's query API (docs/api.md), used by `observe`, `top` and `status`.

Every failure becomes an `ApiError` whose message says what to do: when the server cannot be
reached it names the URL tried and how to point the CLI elsewhere (`--server` or the
`L7SCOPE_SERVER` environment variable); a 4xx answer carries the server's error message.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final

import httpx

from l7scope.contracts.api import (
    AGGREGATION_PATH,
    DEFAULT_URL,
    SEARCH_PATH,
    SERVICEGRAPH_PATH,
    STATUS_PATH,
    decode_error,
)
from l7scope.contracts.auth import TOKEN_ENV, bearer
from l7scope.observe import filters
from l7scope.observe.filters import FilterSpec

SERVER_ENV: Final = "L7SCOPE_SERVER"
MAX_PAGE: Final = 1000

# httpx logs every request at INFO; the CLI's output is the answer, not the transport.
logging.getLogger("httpx").setLevel(logging.WARNING)


def default_server() -> str:
    return os.environ.get(SERVER_ENV) or DEFAULT_URL


class ApiError(RuntimeError):
    """A request to the server failed; `str()` is a complete message for the user."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Client:
    def __init__(self, server: str | None = None, *, token: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None,
                 verify: ssl.SSLContext | bool = True) -> None:
        base = (server or default_server()).rstrip("/")
        if "://" not in base:
            base = "http://" + base
        self.base = base
        self.has_token = token is not None
        self._http = httpx.Client(base_url=base, timeout=timeout, transport=transport, verify=verify,
                                  headers=bearer(token) if token is not None else None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, path: str, err: Exception) -> ApiError:
        return ApiError(
            f"cannot reach the l7scope server at {self.base}{path}: {err or type(err).__name__}\n"
            f"Start it with `l7scope server`, or point the CLI at it with --server URL or "
            f"the {SERVER_ENV} environment variable (default {DEFAULT_URL})."
        )

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.TimeoutException as e:
            raise ApiError(f"the l7scope server at {self.base}{path} did not answer in time ({e})") from None
        except httpx.TransportError as e:
            raise self._unreachable(path, e) from None
        data = self._raise_for(resp, path)
        if not isinstance(data, dict):
            raise ApiError(f"{self.base}{path} did not answer with a JSON object; is this an l7scope server?")
        return data

    def _raise_for(self, resp: httpx.Response, path: str) -> Any:
        """The answer's JSON (None if it is none); an ApiError for a 4xx/5xx answer."""
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code == 401:
            hint = ("the token was refused; check --token-file / $" + TOKEN_ENV) if self.has_token else (
                "no token found: pass --token-file PATH (the server's <data-dir>/token) or set $"
                + TOKEN_ENV)
            raise ApiError(f"the l7scope server at {self.base} wants a credential: {hint}",
                           code="unauthorized", status=401)
        if resp.status_code >= 400:
            err = decode_error(data)
            if err is not None:
                raise ApiError(f"server: {err.message} ({err.code})", code=err.code, status=resp.status_code)
            raise ApiError(f"server answered {resp.status_code} at {self.base}{path}: {resp.text[:200]}",
                           status=resp.status_code)
        return data

    def download(self, path: str, body: Mapping[str, Any], out: IO[bytes]) -> int:
        """POST `body`, stream the answer's bytes into `out` (an export file); the byte count.
        A 4xx/5xx answer (small JSON) becomes the same ApiError `request` raises."""
        try:
            with self._http.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for(resp, path)
                n = 0
                for chunk in resp.iter_bytes():
                    out.write(chunk)
                    n += len(chunk)
                return n
        except httpx.TimeoutException as e:
            raise ApiError(f"the l7scope server at {self.base}{path} did not answer in time ({e})") from None
        except httpx.TransportError as e:
            raise self._unreachable(path, e) from None

    # --- API ---------------------------------------------------------------------------------

    def search(self, selector: str, time_range: Mapping[str, Any], *, page_size: int = 100,
               page_num: int = 0, descending: bool = True) -> dict[str, Any]:
        return self.request("POST", SEARCH_PATH, {
            "selector": selector,
            "time_range": dict(time_range),
            "page_size": page_size,
            "page_num": page_num,
            "sort_by": [{"field": "end_time", "descending": descending}],
        })

    def search_all(self, selector: str, time_range: Mapping[str, Any], *,
                   limit: int | None = None, descending: bool = False
                   ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Pages of every record in the range (or the first `limit`), as (answer, hits) pairs."""
        size = limit if limit is not None and 0 < limit <= MAX_PAGE else MAX_PAGE
        page = 0
        got = 0
        while True:
            ans = self.search(selector, time_range, page_size=size, page_num=page, descending=descending)
            raw = list(ans.get("hits") or [])
            hits = raw if limit is None else raw[: max(0, limit - got)]
            got += len(hits)
            yield ans, hits
            if len(raw) < size or got >= int(ans.get("total_hits", 0)):
                return
            if limit is not None and got >= limit:
                return
            page += 1

    def aggregation(self, selector: str, time_range: Mapping[str, Any], group_by: list[str], *,
                    interval: int | None = None, limit: int = 100, order_by: str = "count") -> dict[str, Any]:
        body: dict[str, Any] = {"selector": selector, "time_range": dict(time_range),
                                "group_by": group_by, "limit": limit, "order_by": order_by}
        if interval is not None:
            body["interval"] = interval
        return self.request("POST", AGGREGATION_PATH, body)

    def servicegraph(self, time_range: Mapping[str, Any], *, selector: str = "",
                     expand: list[str] | None = None, top_routes: int = 5) -> dict[str, Any]:
        return self.request("POST", SERVICEGRAPH_PATH, {
            "time_range": dict(time_range), "selector": selector,
            "expand": expand or [], "top_routes": top_routes,
        })

    def status(self) -> dict[str, Any]:
        return self.request("GET", STATUS_PATH)


def service_backends(client: Client, spec: FilterSpec, time_range: Mapping[str, Any]
                     ) -> dict[str, list[tuple[str, str]]]:
    """The workloads (namespace, name_aggr) behind each Service a filter names, from the server."""
    out: dict[str, list[tuple[str, str]]] = {}
    for v in spec.needs_services():
        ans = client.aggregation(filters.service_query(v), time_range,
                                 ["dest_namespace", "dest_name_aggr"], limit=1000)
        out[v] = sorted((str(g["key"]["dest_namespace"]), str(g["key"]["dest_name_aggr"]))
                        for g in ans.get("groups", []))
    return out
