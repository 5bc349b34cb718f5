"""The service graph's node ids rendered in SQL, for every store.

The same rules as the Python reference `server.graph.source_node` / `dest_node` (docs/api.md;
the contract tests check that both give the same ids). `server.graph.graph_keys` groups a store
by them, and a `GraphStore` (DuckDBStore.graph_stats) sums the graph with them in one statement.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from l7scope.server.store.selector_sql import SqlParams

_DNS_SQL: Final = ("(CASE WHEN \"dest_service_namespace\" != '' AND \"dest_service_name\" != '' "
                   "THEN \"dest_service_namespace\" ELSE \"dest_namespace\" END)")
_KNOWN_SQL: Final = "(\"dest_service_namespace\" != '' AND \"dest_service_name\" != '')"


def in_expanded(expr: str, expanded: Collection[str], p: SqlParams) -> str | None:
    """SQL: `expr` is an expanded namespace; None when nothing is expanded."""
    if "*" in expanded:
        return "1 = 1"
    names = sorted(expanded)
    if not names:
        return None
    return f"{expr} IN ({', '.join(p.add(n) for n in names)})"


def source_id_sql(expanded: Collection[str], p: SqlParams) -> str:
    ns, name = '"src_namespace"', '"src_name_aggr"'
    exp = in_expanded(ns, expanded, p)
    return (
        f"CASE WHEN {ns} IN ('', '-') THEN concat(CASE WHEN \"src_type\" = 'hep' THEN 'hep/' "
        f"ELSE 'net/' END, {name}) "
        + (f"WHEN {exp} THEN concat('wep/', {ns}, '/', {name}) " if exp else "")
        + f"ELSE concat('namespace/', {ns}) END"
    )


def dest_id_sql(expanded: Collection[str], p: SqlParams) -> str:
    name = '"dest_name_aggr"'
    exp = in_expanded(_DNS_SQL, expanded, p)
    inside = (f"CASE WHEN {_KNOWN_SQL} THEN concat('svc/', {_DNS_SQL}, '/', \"dest_service_name\") "
              f"ELSE concat('wep/', {_DNS_SQL}, '/', {name}) END")
    return (
        f"CASE WHEN {_DNS_SQL} IN ('', '-') THEN concat(CASE WHEN \"dest_type\" = 'hep' THEN 'hep/' "
        f"ELSE 'net/' END, {name}) "
        + (f"WHEN {exp} THEN {inside} " if exp else "")
        + f"ELSE concat('namespace/', {_DNS_SQL}) END"
    )


def backend_sql(expanded: Collection[str], p: SqlParams) -> str:
    """`dest_namespace/dest_name_aggr` of records whose destination node is a service, else ''."""
    exp = in_expanded(_DNS_SQL, expanded, p)
    return (f"CASE WHEN {_KNOWN_SQL} AND {_DNS_SQL} NOT IN ('', '-') AND {exp} "
            f"THEN concat(\"dest_namespace\", '/', \"dest_name_aggr\") ELSE '' END")


def backend_edge_sql(expanded: Collection[str], p: SqlParams) -> str:
    """The far end of a backend edge as `Edges.backend` names it: `<service namespace>/<dest_name_aggr>`
    for records whose destination node is a service, else ''. (Backends of a service live in its
    namespace, so this is backend_sql's value; records claiming another namespace share the edge.)"""
    return (f"CASE WHEN ({backend_sql(expanded, p)}) != '' "
            f"THEN concat({_DNS_SQL}, '/', \"dest_name_aggr\") ELSE '' END")


