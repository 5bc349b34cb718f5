"""Envoy's completed-request count from its admin `/stats` text (proxy/admin.py)."""

from __future__ import annotations

from l7scope.proxy import admin


def test_completed_requests_sums_the_capture_listeners_only() -> None:
    text = "\n".join([
        "http.admin.downstream_rq_completed: 40",          # the admin listener's own requests
        "http.l7scope_tproxy.downstream_rq_completed: 12",
        "http.l7scope_nodeport.downstream_rq_completed: 3",
        "listener.0.0.0.0_16001.http.l7scope_tproxy.downstream_rq_completed: 12",  # not http.*
        "http.l7scope_tproxy.downstream_rq_completed_total_bogus: 9",
        ""])
    assert admin.completed_requests(text) == 15
    assert admin.completed_requests("") == 0
