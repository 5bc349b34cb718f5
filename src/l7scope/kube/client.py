"""The one door to the Kubernetes API: connection set-up and plain-JSON requests.

Built on the official `kubernetes` client (pinned; this package is the only importer) for what it
does well, kubeconfig / in-cluster credentials, TLS and token refresh, while every request and
answer here is a plain dict with the API's own JSON field names. That keeps one code path for
built-in kinds, our custom resources and API versions the generated client lacks (for example
`discovery.k8s.io/v1beta1`, which a 1.20 server serves and the client no longer models), and
hands the node agent's metadata cache exactly the dicts it parses.

    kube = connect(kubeconfig="~/.kube/config")      # or connect(in_cluster=True)
    kube.get("/api/v1/namespaces/default/services/web")
    kube.apply(manifest, field_manager="l7scope-operator")   # server-side apply
    for event in kube.watch("/api/v1/pods", resource_version="123"): ...
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.stream import portforward

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class KubeError(RuntimeError):
    """A request the API server answered with an error status (or could not be made)."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, Any] | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = dict(body or {})


@dataclass(frozen=True)
class Credentials:
    """What another client (kopf) needs to reach the same server as this one."""

    server: str
    token: str | None
    ca_file: str | None
    insecure: bool
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True)
class Resource:
    """One API resource as discovery describes it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


def connect(kubeconfig: str | None = None, *, in_cluster: bool | None = None,
            context: str | None = None) -> Kube:
    """A client for the cluster: in-cluster service-account credentials when `in_cluster` is
    true (or None and running in a pod without a kubeconfig), else the kubeconfig file
    (`kubeconfig`, $KUBECONFIG or ~/.kube/config)."""
    conf = k8s_client.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ \
            and not os.environ.get("KUBECONFIG")
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
        else:
            path = os.path.expanduser(kubeconfig) if kubeconfig else None
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=conf)
    except (k8s_config.ConfigException, OSError) as e:
        where = "in-cluster service account" if in_cluster else (kubeconfig or "default kubeconfig")
        raise KubeError(0, "NoCredentials", f"cannot load Kubernetes credentials ({where}): {e}") from None
    return Kube(conf)


class Kube:
    """Plain-JSON requests against one API server. Thread-safe (a pooled HTTP client)."""

    def __init__(self, configuration: k8s_client.Configuration, timeout: float = 30.0) -> None:
        self.configuration = configuration
        self.timeout = timeout
        if not configuration.verify_ssl:
            # The kubeconfig says insecure-skip-tls-verify: the user chose it, once is enough.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._api = k8s_client.ApiClient(configuration)
        self._api.user_agent = "l7scope"
        self._resources: dict[str, dict[str, Resource]] = {}
        self._lock = threading.Lock()
        # The client's websocket helper swaps `call_api` on the ApiClient it is given while it
        # connects: port-forwards get their own ApiClient, one handshake at a time.
        self._pf_api: k8s_client.ApiClient | None = None
        self._pf_lock = threading.Lock()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        if self._pf_api is not None:
            self._pf_api.close()  # type: ignore[no-untyped-call]

    # ---- credentials ---------------------------------------------------------------------
    def credentials(self) -> Credentials:
        c = self.configuration
        token = c.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token and token.lower().startswith("bearer "):
            token = token[7:]
        return Credentials(server=str(c.host), token=token or None, ca_file=c.ssl_ca_cert or None,
                           insecure=not c.verify_ssl, cert_file=c.cert_file or None,
                           key_file=c.key_file or None)

    # ---- requests ------------------------------------------------------------------------
    def _open(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
              content_type: str, timeout: float | tuple[float, float] | None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        q = [(k, _qv(v)) for k, v in (query or {}).items() if v is not None]
        req = self._api.param_serialize(method=method, resource_path=path, query_params=q,
                                        header_params=headers, body=body,
                                        auth_settings=["BearerToken"])
        try:
            resp = self._api.call_api(*req, _request_timeout=timeout)
        except k8s_client.ApiException as e:
            raise KubeError(int(e.status or 0), str(e.reason or ""), str(e.body or e)) from None
        except Exception as e:  # urllib3 connection errors and friends
            raise KubeError(0, type(e).__name__, str(e)) from e
        return resp

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> JSON:
        resp = self._open(method, path, query, body, content_type, timeout or self.timeout)
        resp.read()
        raw: bytes = resp.data or b""
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"message": raw[:300].decode("utf-8", "replace")}
        if not 200 <= int(resp.status) <= 299:
            msg = data.get("message") if isinstance(data, dict) else None
            reason = data.get("reason") if isinstance(data, dict) else None
            raise KubeError(int(resp.status), str(reason or resp.reason or ""),
                            str(msg or raw[:300]), data if isinstance(data, dict) else None)
        return cast(JSON, data) if isinstance(data, dict) else {"items": data}

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query=query)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    def list(self, path: str, *, page_size: int = 500, **query: Any) -> tuple[list[JSON], str]:
        """Every item (paged), and the list's resourceVersion to watch from."""
        items: list[JSON] = []
        cont: str | None = None
        while True:
            page = self.get(path, limit=page_size, **({"continue": cont} if cont else {}), **query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def watch(self, path: str, *, resource_version: str, timeout_seconds: int = 300,
              **query: Any) -> Iterator[JSON]:
        """Watch events (`{"type", "object"}`) from `resource_version`, until the server ends the
        stream (after about `timeout_seconds`). An expired version arrives as an ERROR event
        with `object.code == 410`; the caller relists."""
        q = {"watch": "true", "resourceVersion": resource_version,
             "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds, **query}
        resp = self._open("GET", path, q, None, "", (10.0, timeout_seconds + 30.0))
        raw = resp.response
        try:
            if not 200 <= int(resp.status) <= 299:
                resp.read()
                try:
                    data = json.loads(resp.data or b"{}")
                except ValueError:
                    data = {}
                raise KubeError(int(resp.status), str(data.get("reason") or resp.reason or ""),
                                str(data.get("message") or ""), data)
            buf = b""
            for chunk in raw.stream(amt=None, decode_content=True):
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    if line.strip():
                        yield cast(JSON, json.loads(line))
        finally:
            raw.release_conn()

    # ---- streams ------------------------------------------------------------------------
    def open_port(self, namespace: str, pod: str, port: int, *, timeout: float = 30.0) -> PortStream:
        """A byte stream to `port` of `pod`, through the API server's `pods/portforward`
        subresource (a websocket to the API server, which the kubelet connects to the pod's
        network namespace). One stream per call: a forwarder opens one per local connection. A
        refused handshake is a KubeError with the API server's status (403: RBAC)."""
        with self._pf_lock:
            if self._pf_api is None:
                self._pf_api = k8s_client.ApiClient(self.configuration)
                self._pf_api.user_agent = "l7scope"
            core = k8s_client.CoreV1Api(self._pf_api)
            try:
                pf = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace,
                                 ports=str(port), _request_timeout=timeout)
            except k8s_client.ApiException as e:
                text = str(e.reason or e)
                m = _HANDSHAKE.search(text)
                status = int(m.group(1)) if m else int(e.status or 0)
                raise KubeError(status, m.group(2).strip() if m else "PortForwardFailed",
                                _handshake_message(text)) from None
        return PortStream(pf, port)

    # ---- writes --------------------------------------------------------------------------
    def apply(self, obj: Mapping[str, Any], *, field_manager: str, force: bool = True,
              dry_run: bool = False) -> JSON:
        """Server-side apply: create or update `obj` to exactly the fields it names."""
        res = self.resource(str(obj["apiVersion"]), str(obj["kind"]))
        meta = obj.get("metadata") or {}
        path = res.path(meta.get("namespace"), str(meta["name"]))
        return self.request("PATCH", path, body=json.dumps(obj),
                            content_type="application/apply-patch+yaml",
                            query={"fieldManager": field_manager, "force": force,
                                   "dryRun": "All" if dry_run else None})

    def create(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> JSON:
        res = self.resource(str(obj["apiVersion"]), str(obj["kind"]))
        ns = (obj.get("metadata") or {}).get("namespace")
        return self.request("POST", res.path(ns), body=dict(obj),
                            query={"dryRun": "All" if dry_run else None})

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JSON:
        return self.request("PATCH", path, body=dict(patch),
                            content_type="application/merge-patch+json")

    def delete(self, path: str, *, propagation: str = "Background",
               grace_period_seconds: int | None = None) -> bool:
        """Delete; False when it was already gone."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1",
                                "propagationPolicy": propagation}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            self.request("DELETE", path, body=body)
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    # ---- discovery -----------------------------------------------------------------------
    def resources(self, api_version: str) -> dict[str, Resource]:
        """Resources served under `api_version`, by kind (empty when the version is not served)."""
        with self._lock:
            cached = self._resources.get(api_version)
        if cached is not None:
            return cached
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            data = self.get(path)
        except KubeError as e:
            if e.status != 404:
                raise
            data = {}
        found = {
            str(r["kind"]): Resource(api_version, str(r["kind"]), str(r["name"]), bool(r.get("namespaced")))
            for r in data.get("resources") or [] if "/" not in str(r.get("name"))
        }
        if found:
            with self._lock:
                self._resources[api_version] = found
        return found

    def resource(self, api_version: str, kind: str) -> Resource:
        res = self.resources(api_version).get(kind)
        if res is None:
            with self._lock:  # maybe a CRD established after we looked
                self._resources.pop(api_version, None)
            res = self.resources(api_version).get(kind)
        if res is None:
            raise KubeError(404, "NotFound", f"the server does not serve {kind} in {api_version}")
        return res

    def served_version(self, group: str, preferred: tuple[str, ...]) -> str | None:
        """The first of `preferred` versions (e.g. ("v1", "v1beta1")) the server serves for
        `group`, as a full apiVersion; None when it serves none of them."""
        try:
            data = self.get(f"/apis/{group}")
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        served = {str(v.get("version")) for v in data.get("versions") or []}
        for v in preferred:
            if v in served:
                return f"{group}/{v}"
        return None

    def server_version(self) -> str:
        return str(self.get("/version").get("gitVersion") or "")


_HANDSHAKE = re.compile(r"Handshake status (\d{3}) ?([A-Za-z ]*)")


def _handshake_message(text: str) -> str:
    """The API server's message from a refused websocket handshake (websocket-client puts the
    status line, the headers and the body in one string)."""
    body = text.rsplit("-+-+-", 1)[-1].strip()
    if body.startswith(("b'", 'b"')):
        body = body[2:-1]
    try:
        data = json.loads(body.encode().decode("unicode_escape"))
    except ValueError:
        return text[:300]
    return str(data.get("message") or text[:300]) if isinstance(data, dict) else text[:300]


class PortStream:
    """One port-forwarded connection: `sock` is the local end (a socket) whose bytes reach the
    pod's port; `error()` is what the kubelet reported for it (e.g. nothing listens there)."""

    def __init__(self, pf: Any, port: int) -> None:
        self._pf = pf
        self._port = port
        self.sock = cast(socket.socket, pf.socket(port))  # a socketpair end, wrapped

    def error(self) -> str | None:
        err = self._pf.error(self._port)
        return str(err) if err else None

    def close(self) -> None:
        self._pf.close()


def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
