"""The rendered Envoy bootstrap: structure, the access-log contract, settings validation."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from l7scope.contracts import detail, envoy_log
from l7scope.proxy import bootstrap
from l7scope.proxy.bootstrap import EnvoySettings, render, render_yaml


def _listener(cfg: dict[str, Any]) -> dict[str, Any]:
    (listener,) = cfg["static_resources"]["listeners"]
    return listener


def _chains(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    listener = _listener(cfg)
    chains: list[dict[str, Any]] = listener["filter_chains"][1:]  # [0] is the self-loop guard
    return [*chains, listener["default_filter_chain"]]


def _loggers(chain: dict[str, Any]) -> list[dict[str, Any]]:
    (flt,) = chain["filters"]
    logs: list[dict[str, Any]] = flt["typed_config"]["access_log"]
    return logs


def test_transparent_listener_with_inspectors_in_order() -> None:
    listener = _listener(render(EnvoySettings(tproxy_port=15001)))
    assert listener["transparent"] is True
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15001}
    names = [f["name"].rsplit(".", 1)[1] for f in listener["listener_filters"]]
    assert names == ["original_dst", "tls_inspector", "http_inspector"]
    assert listener["continue_on_listener_filters_timeout"] is True


def test_original_src_keeps_the_client_ip_with_the_upstream_mark() -> None:
    listener = _listener(render(EnvoySettings(original_src_mark=0x2000)))
    names = [f["name"].rsplit(".", 1)[1] for f in listener["listener_filters"]]
    assert names == ["original_dst", "original_src", "tls_inspector", "http_inspector"]
    assert listener["listener_filters"][1]["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc",
        "mark": 0x2000}
    with pytest.raises(ValidationError):
        EnvoySettings(original_src_mark=0)


def test_nodeport_listener_on_the_next_port_with_the_masquerade_bit() -> None:
    mark = bootstrap.nodeport_mark(0x2000)
    assert mark == 0x6000
    cfg = render(EnvoySettings(tproxy_port=15001, original_src_mark=0x2000,
                               nodeport_original_src_mark=mark))
    services, nodeports = cfg["static_resources"]["listeners"]
    assert (services["name"], nodeports["name"]) == (bootstrap.LISTENER_NAME,
                                                     bootstrap.NODEPORT_LISTENER_NAME)
    assert nodeports["transparent"] is True
    assert nodeports["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15002}
    osrc = [f for f in nodeports["listener_filters"] if f["name"].endswith("original_src")]
    assert [f["typed_config"]["mark"] for f in osrc] == [0x6000]
    # the same filter chains, its own self-loop guard
    assert nodeports["filter_chains"][0]["filter_chain_match"] == {"destination_port": 15002}
    assert nodeports["filter_chains"][1:] == services["filter_chains"][1:]
    assert nodeports["default_filter_chain"] == services["default_filter_chain"]


def test_self_loop_guard_closes_direct_connections_first() -> None:
    listener = _listener(render(EnvoySettings(tproxy_port=15001)))
    guard = listener["filter_chains"][0]
    assert guard == {"name": bootstrap.GUARD_CHAIN, "filter_chain_match": {"destination_port": 15001},
                     "filters": []}
    own = {"destination_port_range": {"start": 15001, "end": 15002}}
    odst, *inspectors = listener["listener_filters"]
    assert "filter_disabled" not in odst  # the destination must be restored to be matched
    assert [f["filter_disabled"] for f in inspectors] == [own, own]


def test_limits_are_finite() -> None:
    cfg = render(EnvoySettings(upstream_limit=500, max_downstream_connections=900))
    for c in cfg["static_resources"]["clusters"]:
        (t,) = c["circuit_breakers"]["thresholds"]
        assert (t["max_connections"], t["max_pending_requests"], t["max_requests"]) == (500,) * 3
    (mon,) = cfg["overload_manager"]["resource_monitors"]
    assert mon["name"].endswith("global_downstream_max_connections")
    assert mon["typed_config"]["max_active_downstream_connections"] == 900
    assert cfg["admin"]["ignore_global_conn_limit"] is True
    with pytest.raises(ValidationError):
        EnvoySettings(upstream_limit=0)


def test_filter_chains_follow_calicos_order_and_log_types() -> None:
    chains = _chains(render())
    assert [c["name"] for c in chains] == ["tls_passthrough", "http1", "h2c", "tcp"]
    assert chains[0]["filter_chain_match"] == {"transport_protocol": "tls"}
    assert chains[1]["filter_chain_match"] == {"application_protocols": ["http/1.0", "http/1.1"]}
    assert chains[2]["filter_chain_match"] == {"application_protocols": ["h2c"]}
    assert "filter_chain_match" not in chains[3]
    kinds = [c["filters"][0]["name"].rsplit(".", 1)[1] for c in chains]
    assert kinds == ["tcp_proxy", "http_connection_manager", "http_connection_manager",
                     "tcp_proxy"]
    types = [_loggers(c)[0]["typed_config"]["log_format"]["json_format"]["type"] for c in chains]
    assert types == ["tls", "%PROTOCOL%", "%PROTOCOL%", "tcp"]


def test_every_log_format_is_the_contracts() -> None:
    s = EnvoySettings(access_log_path="/var/log/x/envoy.log")
    for chain in _chains(render(s)):
        file_log = _loggers(chain)[0]["typed_config"]
        assert file_log["path"] == "/var/log/x/envoy.log"
        fmt = file_log["log_format"]["json_format"]
        http = fmt["type"] == "%PROTOCOL%"  # HTTP chains also log the request-detail object
        assert fmt == envoy_log.json_format(fmt["type"], detail.envoy_format() if http else None)
        assert set(fmt) == set(envoy_log.KEYS) | ({"detail"} if http else set())
    # The SNI of TLS connections is logged under the contract's key.
    tls_fmt = _loggers(_chains(render(s))[0])[0]["typed_config"]["log_format"]["json_format"]
    assert tls_fmt["requested_server_name"] == "%REQUESTED_SERVER_NAME%"


def test_hcm_never_alters_requests() -> None:
    for chain in _chains(render())[1:3]:
        hcm = chain["filters"][0]["typed_config"]
        assert hcm["generate_request_id"] is True
        assert hcm["use_remote_address"] is False and hcm["xff_num_trusted_hops"] == 0
        assert hcm["stream_idle_timeout"] == "0s" and hcm["max_request_headers_kb"] >= 1024
        assert hcm["server_header_transformation"] == "PASS_THROUGH"
        (vhost,) = hcm["route_config"]["virtual_hosts"]
        (route,) = vhost["routes"]
        assert vhost["domains"] == ["*"]
        assert "retry_policy" not in route["route"] and "retry_policy" not in vhost
        assert route["route"]["timeout"] == "0s"
        assert not {"host_rewrite_literal", "auto_host_rewrite", "prefix_rewrite"} & set(
            route["route"])
    http1 = _chains(render())[1]["filters"][0]["typed_config"]
    assert http1["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == (
        bootstrap.CLUSTER_HTTP1)
    h2c = _chains(render())[2]["filters"][0]["typed_config"]
    assert h2c["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == (
        bootstrap.CLUSTER_H2C)


def test_original_dst_clusters() -> None:
    clusters = {c["name"]: c for c in render()["static_resources"]["clusters"]}
    assert set(clusters) == {bootstrap.CLUSTER_HTTP1, bootstrap.CLUSTER_H2C}
    for c in clusters.values():
        assert (c["type"], c["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
        assert c["circuit_breakers"]["thresholds"][0]["max_retries"] == 0
    opts = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    h2 = clusters[bootstrap.CLUSTER_H2C]["typed_extension_protocol_options"][opts]
    assert "http2_protocol_options" in h2["explicit_http_config"]


def test_als_logger_and_unix_cluster_only_when_configured() -> None:
    assert all(len(_loggers(c)) == 1 for c in _chains(render()))
    cfg = render(EnvoySettings(als_socket="unix:///run/l7/als.sock", als_log_name="node-1"))
    chains = _chains(cfg)
    for chain in chains[1:3]:
        names = [lg["name"] for lg in _loggers(chain)]
        assert names == ["envoy.access_loggers.file", "envoy.access_loggers.http_grpc"]
        common = _loggers(chain)[1]["typed_config"]["common_config"]
        assert common["log_name"] == "node-1"
        assert common["grpc_service"]["envoy_grpc"]["cluster_name"] == bootstrap.CLUSTER_ALS
    assert all(len(_loggers(c)) == 1 for c in (chains[0], chains[3]))
    (als,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == bootstrap.CLUSTER_ALS]
    ep = als["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"] == {"pipe": {"path": "/run/l7/als.sock"}}


def test_admin_is_a_unix_socket_or_loopback_only() -> None:
    cfg = render(EnvoySettings(admin_address="127.0.0.2:19901"))
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.2",
                                                         "port_value": 19901}
    for given in ("unix:/run/l7scope/admin.sock", "unix:///run/l7scope/admin.sock"):
        s = EnvoySettings(admin_address=given)
        assert s.admin_address == "unix:/run/l7scope/admin.sock"
        assert render(s)["admin"]["address"] == {
            "pipe": {"path": "/run/l7scope/admin.sock", "mode": 0o660}}
    for bad in ("0.0.0.0:9901", "10.0.0.1:9901", "localhost", "127.0.0.1:0",
                "unix:relative.sock", "unix:/run/../etc/admin.sock"):
        with pytest.raises(ValidationError):
            EnvoySettings(admin_address=bad)


def test_settings_reject_unknown_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        EnvoySettings.model_validate({"tproxy_prot": 1})
    with pytest.raises(ValidationError):
        EnvoySettings(tproxy_port=70000)
    with pytest.raises(ValidationError):
        EnvoySettings(als_socket="relative.sock")


def test_yaml_round_trips() -> None:
    s = EnvoySettings(als_socket="/tmp/als.sock")
    assert yaml.safe_load(render_yaml(s)) == render(s)


def test_cli_prints_the_rendered_yaml() -> None:
    from l7scope.cli import main

    res = CliRunner().invoke(main, ["envoy-config", "--tproxy-port", "16005",
                                    "--access-log", "/tmp/a.log"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.output) == render(
        EnvoySettings(tproxy_port=16005, access_log_path="/tmp/a.log"))
    bad = CliRunner().invoke(main, ["envoy-config", "--admin-address", "0.0.0.0:9901"])
    assert bad.exit_code == 2 and "loopback" in bad.output


def test_listeners_also_bind_ipv6_when_asked() -> None:
    assert "additional_addresses" not in _listener(render(EnvoySettings()))
    cfg = render(EnvoySettings(listen_address_v6="::", nodeport_original_src_mark=0x6000))
    for listener in cfg["static_resources"]["listeners"]:
        port = listener["address"]["socket_address"]["port_value"]
        assert listener["additional_addresses"] == [
            {"address": {"socket_address": {"address": "::", "port_value": port}}}]
    with pytest.raises(ValidationError):
        EnvoySettings(listen_address_v6="10.0.0.1")
