"""Filters of `l7scope observe`: command-line flags -> one selector (the server's language,
docs/api.md), and the same selector evaluated locally on records read from a file or standard
input, so both paths give identical answers by construction.

Semantics (as in `hubble observe`): values of the same flag are alternatives (OR); different
flags must all hold (AND); `--not` before a flag excludes what that flag matches; `--selector`
adds a raw selector (AND).

`--from-service` has no record field to match (Calico's schema carries the source workload, not
its Service): it matches requests sent by the workloads that answered for that Service in the
same time range (the service graph's `backend` edges), resolved from the data before the query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from l7scope.contracts.record import L7Record
from l7scope.contracts.selector import And, Cmp, In, Node, Or, SelectorError, parse, quote

Record = Mapping[str, Any]

#: filter flag name -> help text. The order is the order of --help.
FLAGS: Final[dict[str, str]] = {
    "namespace": "Requests from or to this namespace.",
    "from-namespace": "Requests from this namespace.",
    "to-namespace": "Requests to this namespace (destination pod or Service).",
    "from-service": "Requests from the workloads behind this Service ([NAMESPACE/]NAME).",
    "to-service": "Requests to this Service ([NAMESPACE/]NAME).",
    "from-workload": "Requests from this workload ([NAMESPACE/]NAME: a Deployment/DaemonSet name or an aggregated pod name such as cart-7d9f5b-*).",
    "to-workload": "Requests to this workload ([NAMESPACE/]NAME).",
    "http-method": "HTTP method, e.g. GET.",
    "http-status": "HTTP status: exact (404) or a prefix class (5+, 40+).",
    "http-path": "Regular expression that must match the whole URL path, e.g. '/api/.*'.",
}

# The pod-template hash of a ReplicaSet's pods (Kubernetes uses its own alphabet; generators
# such as the demo's use hex, so any 5..10 lower-case letters and digits).
_HASH: Final = "[a-z0-9]{5,10}"
_STATUS: Final = re.compile(r"^([1-5][0-9]{0,2})(\+?)$")
_METHOD: Final = re.compile(r"^[A-Za-z]{1,20}$")


class FilterError(ValueError):
    """A flag value that cannot be turned into a filter; the message names the flag."""


@dataclass(frozen=True)
class FilterSpec:
    """What the user asked for: flag name -> values, positive and negated, plus raw selectors."""

    include: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: dict[str, tuple[str, ...]] = field(default_factory=dict)
    selectors: tuple[str, ...] = ()

    def needs_services(self) -> list[str]:
        """Values of --from-service (positive and negated) that must be resolved to workloads."""
        return [*self.include.get("from-service", ()), *self.exclude.get("from-service", ())]

    def empty(self) -> bool:
        return not (any(self.include.values()) or any(self.exclude.values()) or self.selectors)


def _split(value: str) -> tuple[str | None, str]:
    ns, sep, name = value.partition("/")
    if not sep:
        return None, value
    if not ns or not name:
        raise FilterError(f"{value!r}: expected NAME or NAMESPACE/NAME")
    return ns, name


def _or(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _workload(side: str, value: str) -> str:
    ns, name = _split(value)
    if "*" in name:
        cond = f"{side}_name_aggr = {quote(name)}"
    else:
        # An aggregated pod name is the pod's generateName + "*": `name-<rs hash>-*` for a
        # Deployment, `name-*` for a DaemonSet/Job; a pod without generateName keeps its name.
        pattern = re.escape(name) + f"(-{_HASH})?-\\*|" + re.escape(name)
        cond = f"{side}_name_aggr =~ {quote(pattern)}"
    return f"({side}_namespace = {quote(ns)} AND {cond})" if ns else cond


def _status(value: str) -> str:
    m = _STATUS.match(value.strip())
    if not m:
        raise FilterError(f"--http-status {value!r}: expected a code like 404 or a class like 5+ or 40+")
    digits, plus = m.groups()
    if not plus:
        if len(digits) != 3:
            raise FilterError(f"--http-status {value!r}: an exact code has 3 digits (or add + for a class)")
        return f"response_code = {quote(digits)}"
    if len(digits) == 3:
        return f"response_code = {quote(digits)}"
    return f"response_code =~ {quote(digits + '[0-9]' * (3 - len(digits)))}"


def _path(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise FilterError(f"--http-path {value!r}: bad regular expression: {e}") from None
    # `url` is host[:port] + path (Calico): skip the host part, then the path must match whole.
    return f"url =~ {quote('[^/]*(?:' + value + ')')}"


def condition(flag: str, value: str, services: Mapping[str, Sequence[tuple[str, str]]]) -> str:
    """The selector for one flag value. `services` maps a --from-service value to the
    (namespace, name_aggr) of the workloads that answered for that Service."""
    v = value.strip()
    if not v:
        raise FilterError(f"--{flag}: empty value")
    if flag == "namespace":
        q = quote(v)
        return f"(src_namespace = {q} OR dest_namespace = {q} OR dest_service_namespace = {q})"
    if flag == "from-namespace":
        return f"src_namespace = {quote(v)}"
    if flag == "to-namespace":
        q = quote(v)
        return f"(dest_namespace = {q} OR dest_service_namespace = {q})"
    if flag == "to-service":
        ns, name = _split(v)
        cond = f"dest_service_name = {quote(name)}"
        return f"({cond} AND dest_service_namespace = {quote(ns)})" if ns else cond
    if flag == "from-service":
        _split(v)
        workloads = services.get(v, ())
        if not workloads:
            # Nothing answered for that Service in this time range: nothing was sent by it.
            return "count < 0"
        by_ns: dict[str, list[str]] = {}
        for ns, name in workloads:
            by_ns.setdefault(ns, []).append(name)
        return _or([
            f"(src_namespace = {quote(ns)} AND src_name_aggr IN ({', '.join(quote(n) for n in sorted(names))}))"
            for ns, names in sorted(by_ns.items())
        ])
    if flag == "from-workload":
        return _workload("src", v)
    if flag == "to-workload":
        return _workload("dest", v)
    if flag == "http-method":
        if not _METHOD.match(v):
            raise FilterError(f"--http-method {value!r}: expected a method name such as GET")
        return f"method = {quote(v.upper())}"
    if flag == "http-status":
        return _status(v)
    if flag == "http-path":
        return _path(value)
    raise FilterError(f"unknown filter --{flag}")


def to_selector(
    spec: FilterSpec, services: Mapping[str, Sequence[tuple[str, str]]] | None = None
) -> str:
    """The one selector equivalent to the flags ("" matches everything)."""
    services = services or {}
    parts: list[str] = []
    for flag in FLAGS:
        values = spec.include.get(flag, ())
        if values:
            parts.append(_or([condition(flag, v, services) for v in values]))
    for flag in FLAGS:
        for v in spec.exclude.get(flag, ()):
            parts.append(f"NOT {condition(flag, v, services)}")
    for raw in spec.selectors:
        if raw.strip():
            try:
                parse(raw)
            except SelectorError as e:
                raise FilterError(f"--selector: {e.message}") from None
            parts.append(f"({raw})")
    return " AND ".join(parts)


def service_query(value: str) -> str:
    """Selector of the records that answered for a --from-service value (to find its workloads)."""
    ns, name = _split(value.strip())
    cond = f"dest_service_name = {quote(name)}"
    return f"{cond} AND dest_service_namespace = {quote(ns)}" if ns else cond


def services_from_records(
    values: Iterable[str], records: Sequence[Record]
) -> dict[str, list[tuple[str, str]]]:
    """The local equivalent of resolving --from-service against the server."""
    out: dict[str, list[tuple[str, str]]] = {}
    for v in values:
        match = compile_selector(service_query(v))
        found = {(str(r.get("dest_namespace", "")), str(r.get("dest_name_aggr", "")))
                 for r in records if match(r)}
        out[v] = sorted(found)
    return out


# --- local evaluation ----------------------------------------------------------------------

_DEFAULTS: Final[dict[str, Any]] = {
    f: getattr(L7Record(start_time=0, end_time=0), f) for f in L7Record.__struct_fields__
}


def _compile(node: Node) -> Callable[[Record], bool]:
    if isinstance(node, Cmp):
        f, op, value = node.field, node.op, node.value
        default = _DEFAULTS.get(f)

        def get(r: Record) -> Any:
            return r.get(f, default)

        if op == "=":
            return lambda r: bool(get(r) == value)
        if op == "!=":
            return lambda r: bool(get(r) != value)
        if op in ("=~", "!~"):
            rx = re.compile(str(value))
            want = op == "=~"
            return lambda r: (rx.fullmatch(str(get(r))) is not None) is want
        num = int(value)
        if op == "<":
            return lambda r: bool(get(r) < num)
        if op == "<=":
            return lambda r: bool(get(r) <= num)
        if op == ">":
            return lambda r: bool(get(r) > num)
        return lambda r: bool(get(r) >= num)
    if isinstance(node, In):
        f, values, neg = node.field, frozenset(node.values), node.negated
        default = _DEFAULTS.get(f)
        return lambda r: (r.get(f, default) in values) is not neg
    if isinstance(node, And):
        items = [_compile(n) for n in node.items]
        return lambda r: all(p(r) for p in items)
    if isinstance(node, Or):
        items = [_compile(n) for n in node.items]
        return lambda r: any(p(r) for p in items)
    inner = _compile(node.item)
    return lambda r: not inner(r)


def compile_selector(selector: str) -> Callable[[Record], bool]:
    """A predicate with the server's meaning of `selector`. Raises FilterError."""
    try:
        node = parse(selector)
    except SelectorError as e:
        raise FilterError(f"selector: {e.message}") from None
    if node is None:
        return lambda r: True
    return _compile(node)
