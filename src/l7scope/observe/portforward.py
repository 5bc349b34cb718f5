"""Reach the cluster's l7scope server through the kubeconfig: `-P/--port-forward` on `observe`,
`top`, `status` and `export`, and `l7scope dashboard`.

1. The kubeconfig (`--kubeconfig`, else $KUBECONFIG or ~/.kube/config; `--context`) gives the
   API server and the user's credentials, as for kubectl.
2. The Service `l7scope-server` in the namespace (default `l7scope-system`, where the operator
   installs it) gives the pods behind it (its selector) and the pod port (its targetPort).
3. One Ready pod is chosen (`choose_pod`), and a local loopback port is forwarded to it through
   the API server's `pods/portforward` subresource (`kube/forward.py`, `Kube.open_port`): no
   kubectl, no NodePort, the NetworkPolicy does not apply (the kubelet enters the pod).
4. TLS is verified with the operator's CA from the ConfigMap `l7scope-server-ca` (its server
   certificate names 127.0.0.1 and localhost), unless --ca-file / $L7SCOPE_CA_FILE says
   otherwise.
5. The server (`--auth kubernetes`) is sent the kubeconfig user's own bearer token, unless a
   token is given (--token-file / $L7SCOPE_TOKEN). Sending it is safe here: the server is the
   one this cluster's API server leads to, not an address typed by hand.

Each step's failure is a `ReachError` with a message that names what is missing: the Service,
a Ready pod, the CA, a token, or the RBAC permission (`pods/portforward`, ...).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from l7scope.contracts import install
from l7scope.kube.forward import Forwarder

if TYPE_CHECKING:
    from l7scope.kube.client import Kube

KUBE_EXTRA: Final = "kube"
INSTALL_KUBE: Final = f"pip install 'l7scope[{KUBE_EXTRA}]'"
SSAR_PATH: Final = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
#: the verbs RBAC checks for a port-forward: `get` for the websocket upgrade (a GET), `create`
#: for SPDY (kubectl) and, since Kubernetes 1.30, for websockets too
PORTFORWARD_VERBS: Final = ("get", "create")


#: the top-level modules the `kube` extra brings (the client and its dependencies)
KUBE_MODULES: Final = ("kubernetes", "urllib3", "websocket", "yaml", "google", "requests")


def kube_missing(e: ModuleNotFoundError) -> bool:
    return bool(e.name) and str(e.name).split(".")[0] in KUBE_MODULES


class ReachError(RuntimeError):
    """The server could not be reached through the cluster; `str()` is the whole message.
    `usage` marks the user's own setup (no kubeconfig, no token): a usage error, exit 2."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class MissingKubeClient(ReachError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs the Kubernetes client, which is not installed: "
                         f"{INSTALL_KUBE}", usage=True)


# ---- pure parts ---------------------------------------------------------------------------------
def is_ready(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def choose_pod(pods: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod to forward to: a Ready, running pod that is not being deleted; of several, the one
    that has been ready longest (then by name), so repeated runs pick the same pod."""
    ready = [p for p in pods if is_ready(p)]

    def since(p: Mapping[str, Any]) -> tuple[str, str]:
        cond = [c for c in (p.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        return (str(cond[0].get("lastTransitionTime") or "") if cond else "",
                str((p.get("metadata") or {}).get("name") or ""))
    return min(ready, key=since) if ready else None


def describe_pods(pods: list[Mapping[str, Any]]) -> str:
    """`name (phase, not ready)` for each pod: what the error says when none is Ready."""
    out = []
    for p in pods:
        name = (p.get("metadata") or {}).get("name", "?")
        phase = (p.get("status") or {}).get("phase", "?")
        why = "being deleted" if (p.get("metadata") or {}).get("deletionTimestamp") else "not ready"
        out.append(f"{name} ({phase}, {why})")
    return ", ".join(out)


def label_selector(service: Mapping[str, Any]) -> str:
    sel = (service.get("spec") or {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def target_port(service: Mapping[str, Any], pod: Mapping[str, Any], port: int) -> int:
    """The pod port behind the Service's `port` (its targetPort: a number, or a container
    port's name looked up in the pod; absent: the same number)."""
    ports = (service.get("spec") or {}).get("ports") or []
    match = [p for p in ports if int(p.get("port") or 0) == port] or ports[:1]
    if not match:
        return port
    target = match[0].get("targetPort", match[0].get("port", port))
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                return int(cp["containerPort"])
    raise ReachError(f"the Service's targetPort {target!r} names no container port of pod "
                     f"{(pod.get('metadata') or {}).get('name')}")


def local_url(host: str, port: int) -> str:
    return f"https://{host}:{port}"


def forbidden(verb: str, resource: str, namespace: str, name: str | None = None) -> str:
    what = f"{resource} {name}" if name else resource
    return (f"the Kubernetes API refused to {verb} {what} in namespace {namespace}: your user "
            f"needs `{verb}` on `{resource}` there (RBAC: a Role in {namespace} bound to you)")


def portforward_denied(namespace: str, pod: str, missing: list[str], detail: str) -> str:
    verbs = missing or list(PORTFORWARD_VERBS)
    rule = (f"  - apiGroups: [\"\"]\n    resources: [\"pods/portforward\"]\n"
            f"    verbs: [{', '.join(repr(v).replace(chr(39), chr(34)) for v in verbs)}]")
    return (f"the Kubernetes API refused the port-forward to pod {pod} in namespace {namespace} "
            f"({detail}): your user needs {' and '.join(f'`{v}`' for v in verbs)} on "
            f"`pods/portforward` there, e.g. a Role in {namespace} with\n{rule}")


# ---- the session ----------------------------------------------------------------------------------
@dataclass
class Reached:
    url: str
    token: str | None
    verify: ssl.SSLContext | bool
    namespace: str
    pod: str
    pod_port: int
    forwarder: Forwarder


def kube_connect(kubeconfig: str | None, context: str | None, what: str) -> Kube:
    """The kubeconfig's client; MissingKubeClient without the `kube` extra."""
    try:
        from l7scope.kube.client import KubeError, connect
    except ModuleNotFoundError as e:
        if kube_missing(e):
            raise MissingKubeClient(what) from None
        raise
    try:
        return connect(kubeconfig, in_cluster=False, context=context)
    except KubeError as e:
        raise ReachError(f"{what}: {e.message}", usage=True) from None


def _allowed(kube: Kube, verb: str, namespace: str, pod: str) -> bool | None:
    """SelfSubjectAccessReview: may the user `verb` pods/portforward of `pod`? (None: unknown)"""
    from l7scope.kube.client import KubeError

    try:
        ans = kube.request("POST", SSAR_PATH, body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb,
                                            "resource": "pods", "subresource": "portforward",
                                            "name": pod}}})
    except KubeError:
        return None
    return bool((ans.get("status") or {}).get("allowed"))


def _get(kube: Kube, path: str, verb: str, resource: str, namespace: str,
         name: str | None = None, **query: Any) -> dict[str, Any] | None:
    """GET `path`; None on 404; a ReachError naming the permission on 403."""
    from l7scope.kube.client import KubeError

    try:
        if verb == "list":
            items, _ = kube.list(path, **query)
            return {"items": items}
        return kube.get(path, **query)
    except KubeError as e:
        if e.status == 404:
            return None
        if e.status in (401, 403):
            raise ReachError(forbidden(verb, resource, namespace, name)
                             if e.status == 403 else f"the Kubernetes API refused the "
                             f"kubeconfig's credentials ({e.message})") from None
        raise ReachError(f"the Kubernetes API answered: {e}") from None


def locate(kube: Kube, namespace: str) -> tuple[str, int]:
    """(pod, pod port) of a Ready server pod behind the Service in `namespace`."""
    ns = quote(namespace, safe="")
    svc = _get(kube, f"/api/v1/namespaces/{ns}/services/{install.SERVER}", "get", "services",
               namespace, install.SERVER)
    if svc is None:
        raise ReachError(
            f"no l7scope server in namespace {namespace}: Service {install.SERVER} not found. Is "
            f"an ApplicationLayer applied (docs/install.md)? In another namespace: --namespace NS")
    selector = label_selector(svc)
    if not selector:
        raise ReachError(f"Service {namespace}/{install.SERVER} has no selector: no pod to forward to")
    found = _get(kube, f"/api/v1/namespaces/{ns}/pods", "list", "pods", namespace,
                 labelSelector=selector) or {}
    pods: list[Mapping[str, Any]] = list(found.get("items") or [])
    pod = choose_pod(pods)
    if pod is None:
        seen = f": {describe_pods(pods)}" if pods else " (no pod matches its selector " + selector + ")"
        raise ReachError(f"no Ready pod behind Service {namespace}/{install.SERVER}{seen}. "
                         f"`kubectl -n {namespace} describe pod -l {selector}` says why")
    return str(pod["metadata"]["name"]), target_port(svc, pod, install.SERVER_PORT)


def operator_ca(kube: Kube, namespace: str) -> ssl.SSLContext:
    """A TLS context trusting the operator's CA bundle (the ConfigMap; certificates only)."""
    ns = quote(namespace, safe="")
    cm = _get(kube, f"/api/v1/namespaces/{ns}/configmaps/{install.CA_CONFIGMAP}", "get",
              "configmaps", namespace, install.CA_CONFIGMAP)
    pem = ((cm or {}).get("data") or {}).get(install.CA_CERT_KEY)
    if not pem:
        raise ReachError(
            f"no CA bundle in ConfigMap {namespace}/{install.CA_CONFIGMAP} (key "
            f"{install.CA_CERT_KEY}) to verify the server's certificate with; pass the CA that "
            "signed it with --ca-file (with cert-manager: your issuer's CA)")
    try:
        return ssl.create_default_context(cadata=pem)
    except ssl.SSLError as e:
        raise ReachError(f"the CA bundle in {namespace}/{install.CA_CONFIGMAP} is unusable: {e}") from None


def user_token(kube: Kube, what: str) -> str:
    """The kubeconfig user's bearer token; a usage error when it has none (client certificates
    only)."""
    token = kube.credentials().token
    if not token:
        raise ReachError(
            f"{what}: the kubeconfig's user has no bearer token to send to the l7scope server "
            "(client certificates cannot be passed on); use a user with a token or an exec "
            "plugin, or `kubectl create token <serviceaccount>` into a file for --token-file",
            usage=True)
    return token


def check_forward(kube: Kube, namespace: str, pod: str, port: int) -> None:
    """Open one stream (and close it): a refused port-forward is reported before the command
    starts, with the missing permission."""
    from l7scope.kube.client import KubeError

    try:
        kube.open_port(namespace, pod, port).close()
    except KubeError as e:
        if e.status == 403:
            missing = [v for v in PORTFORWARD_VERBS if _allowed(kube, v, namespace, pod) is False]
            raise ReachError(portforward_denied(namespace, pod, missing, e.message)) from None
        raise ReachError(f"cannot port-forward to pod {namespace}/{pod}: {e}") from None


@contextlib.contextmanager
def forward_server(kubeconfig: str | None, context: str | None, namespace: str, *,
                   local_port: int = 0, token: str | None = None,
                   verify: ssl.SSLContext | bool | None = None, what: str = "-P/--port-forward",
                   fallback_port: bool = False,
                   on_ready: Callable[[Reached], None] | None = None) -> Iterator[Reached]:
    """Forward a loopback port to the cluster's server for the `with` block. `token` and
    `verify` given by the user win over the kubeconfig's token and the operator's CA.
    `fallback_port`: if `local_port` is taken, take any free one."""
    kube = kube_connect(kubeconfig, context, what)
    forwarder: Forwarder | None = None
    try:
        pod, port = locate(kube, namespace)
        ctx = verify if verify is not None else operator_ca(kube, namespace)
        tok = token if token is not None else user_token(kube, what)
        check_forward(kube, namespace, pod, port)

        def dial() -> Any:
            return kube.open_port(namespace, pod, port)
        try:
            forwarder = Forwarder(dial, port=local_port)
        except OSError as e:
            if not fallback_port:
                raise ReachError(f"cannot listen on 127.0.0.1:{local_port}: {e}", usage=True) from None
            forwarder = Forwarder(dial, port=0)
        forwarder.start()
        reached = Reached(local_url(forwarder.host, forwarder.port), tok, ctx, namespace, pod,
                          port, forwarder)
        if on_ready is not None:
            on_ready(reached)
        yield reached
    finally:
        if forwarder is not None:
            forwarder.close()
        kube.close()
