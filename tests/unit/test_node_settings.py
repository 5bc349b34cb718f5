"""Node settings: Felix names and defaults, validation errors naming the key, live re-read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l7scope.contracts import nodeconfig as st
from l7scope.node.settings import SettingsFile, load


def test_felix_defaults() -> None:
    s = st.NodeSettings()
    assert s.tproxy_mode == "Disabled" and s.tproxy_port == 16001
    assert s.l7_logs_file_directory == "/var/log/calico/l7logs"
    assert (s.l7_logs_file_max_files, s.l7_logs_file_max_file_size_mb) == (5, 100)
    assert s.l7_logs_file_per_node_limit == 1500
    assert s.l7_logs_flush_interval == 1.0  # deliberately shorter than Felix's 300 s
    agg = s.aggregation()
    assert agg == st.AggregationSettings()  # one set of defaults
    assert (agg.http_header_info, agg.source_info, agg.trim_url, agg.num_url_path,
            agg.url_char_limit) == ("ExcludeL7HTTPHeaderInfo", "IncludeL7SourceInfoNoPort",
                                    "IncludeL7FullURL", 5, 250)


def test_felix_field_names_and_whole_object() -> None:
    obj = {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
           "metadata": {"name": "default"},
           "spec": {"tproxyMode": "EnabledAllServices", "l7LogsFlushInterval": "5m0s",
                    "l7LogsFileAggregationTrimURL": "TrimURLQuery",
                    "l7LogsFilePerNodeLimit": 0, "policySyncPathPrefix": "/run/x"}}
    s = st.from_mapping(obj)
    assert s.tproxy_mode == "EnabledAllServices"
    assert s.l7_logs_flush_interval == 300.0
    assert s.aggregation().trim_url == "TrimURLQuery"
    assert s.aggregation().per_node_limit == 0
    assert s.socket_path() == Path("/run/x/socket")


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("5m0s", 300.0),
                                               ("1h2m3s", 3723.0), ("2.5s", 2.5), (3, 3.0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert st.parse_duration(text) == seconds


@pytest.mark.parametrize(("spec", "key"), [
    ({"tproxyMode": "On"}, "tproxyMode"),
    ({"l7LogsFlushInterval": "soon"}, "l7LogsFlushInterval"),
    ({"l7LogsFileAggregationSourceInfo": "IncludeEverything"}, "l7LogsFileAggregationSourceInfo"),
    ({"l7logsFlushInterval": "1s"}, "l7logsFlushInterval"),  # typo: unknown key
    ({"l7LogsFilePerNodeLimit": -1}, "l7LogsFilePerNodeLimit"),
])
def test_errors_name_the_key(spec: dict[str, object], key: str) -> None:
    with pytest.raises(st.SettingsError, match=key):
        st.from_mapping(spec, "node.yaml")


def test_settings_file_reload_keeps_last_good(tmp_path: Path) -> None:
    p = tmp_path / "node.yaml"
    p.write_text("tproxyMode: Enabled\n")
    f = SettingsFile(p)
    assert f.current.tproxy_mode == "Enabled"
    assert f.poll() is None
    p.write_text("tproxyMode: EnabledAllServices\nl7LogsFlushInterval: 2s\n")
    os.utime(p, ns=(1, 2_000_000_000))
    new = f.poll()
    assert new is not None and new.tproxy_mode == "EnabledAllServices"
    p.write_text("tproxyMode: [broken\n")
    os.utime(p, ns=(1, 3_000_000_000))
    assert f.poll() is None
    assert f.errors == 1 and "not YAML" in f.last_error
    assert f.current.tproxy_mode == "EnabledAllServices"


# ---- marks, ports and host paths ----------------------------------------------------------

def test_mark_and_port_defaults_avoid_felix_and_kube_proxy() -> None:
    s = st.NodeSettings()
    assert (s.tproxy_mark, s.tproxy_upstream_conn_mark, s.tproxy_port) == (0x1000, 0x2000, 16001)
    for mark in (s.tproxy_mark, s.tproxy_upstream_conn_mark):
        assert mark & (0xFFFF0000 | 0x4000 | 0x8000) == 0
    assert s.tproxy_mark & s.tproxy_upstream_conn_mark == 0


@pytest.mark.parametrize("spec", [
    {"tproxyMark": 0x1}, {"tproxyMark": 0x800, "tproxyUpstreamConnMark": 0x17},  # Calico's 0x17
    {"tproxyUpstreamConnMark": 0x300}, {"tproxyPort": 1024}, {"tproxyPort": 29998},
    {"tproxyMark": 0x2000, "tproxyUpstreamConnMark": 0x1000},
])
def test_good_marks_and_ports(spec: dict[str, object]) -> None:
    st.from_mapping(spec)


@pytest.mark.parametrize(("spec", "why"), [
    ({"tproxyMark": 0x3000}, "tproxyMark.*single bit"),
    ({"tproxyMark": 0}, "tproxyMark"),
    ({"tproxyMark": 0x1000000}, "tproxyMark 0x1000000 overlaps Felix's iptablesMarkMask"),
    ({"tproxyMark": 0x4000}, "tproxyMark 0x4000 overlaps kube-proxy's masquerade bit"),
    ({"tproxyMark": 0x8000}, "tproxyMark 0x8000 overlaps kube-proxy's drop bit"),
    ({"tproxyUpstreamConnMark": 0x10017}, "tproxyUpstreamConnMark 0x10017 overlaps Felix"),
    ({"tproxyUpstreamConnMark": 0xC000}, "tproxyUpstreamConnMark 0xc000 overlaps kube-proxy"),
    ({"tproxyUpstreamConnMark": 0x1001}, "tproxyMark 0x1000 and tproxyUpstreamConnMark 0x1001"),
    ({"tproxyUpstreamConnMark": 1 << 32}, "tproxyUpstreamConnMark"),
    ({"tproxyPort": 80}, "tproxyPort"),  # privileged
    ({"tproxyPort": 29999}, "tproxyPort"),  # its +1 would be NodePort 30000
    ({"tproxyPort": 40000}, "tproxyPort"),  # ephemeral range
])
def test_bad_marks_and_ports(spec: dict[str, object], why: str) -> None:
    with pytest.raises(st.SettingsError, match=why):
        st.from_mapping(spec, "node.yaml")


GOOD_CLUSTER_PATHS = ["/var/run/nodeagent", "/run/l7scope/sync", "/var/lib/l7scope",
                      "/var/log/calico/l7logs", "/var/run/node-agent_2.d"]
BAD_PATHS = ["relative/dir", "", "/", "/var/run/nodeagent/", "/var/run//nodeagent",
             "/var/run/./nodeagent", "/var/run/../etc", "/var/run/x/.."]
BAD_CLUSTER_PATHS = [*BAD_PATHS, "/tmp/x", "/etc/kubernetes", "/var/run", "/run", "/var/lib",
                     "/var/runner/x", "/var/lib/.hidden", "/proc/1/root", "/var/log/a b"]


@pytest.mark.parametrize("path", GOOD_CLUSTER_PATHS)
@pytest.mark.parametrize("key", ["policySyncPathPrefix", "l7LogsFileDirectory"])
def test_good_host_paths(path: str, key: str) -> None:
    assert st.from_mapping({key: path}).model_dump(by_alias=True)[key] == path


@pytest.mark.parametrize("path", BAD_CLUSTER_PATHS)
@pytest.mark.parametrize("key", ["policySyncPathPrefix", "l7LogsFileDirectory"])
def test_bad_cluster_host_paths(path: str, key: str) -> None:
    with pytest.raises(st.SettingsError, match=key):
        st.from_mapping({key: path})


def test_local_settings_file_may_name_any_normalized_path(tmp_path: Path) -> None:
    p = tmp_path / "node.yaml"
    p.write_text(f"policySyncPathPrefix: {tmp_path}/sync\n")
    assert load(p).policy_sync_path_prefix == f"{tmp_path}/sync"
    for bad in BAD_PATHS:
        with pytest.raises(st.SettingsError, match="policySyncPathPrefix"):
            st.from_mapping({"policySyncPathPrefix": bad}, local_paths=True)


def test_crd_pattern_is_the_cluster_rule() -> None:
    import re

    from l7scope.operator import crd

    props = crd.node_agent_configuration_crd()["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]["properties"]
    for key in ("policySyncPathPrefix", "l7LogsFileDirectory"):
        pattern = props[key]["pattern"]
        assert pattern == st.CLUSTER_PATH_PATTERN
        for path in GOOD_CLUSTER_PATHS:
            assert re.search(pattern, path), path
        for path in BAD_CLUSTER_PATHS:
            # the API server rejects what the pattern does not match; the pattern alone must
            # already refuse every bad path (the API server cannot run our Python checks)
            assert not re.search(pattern, path), path
    assert props["tproxyPort"]["minimum"] == 1024 and props["tproxyPort"]["maximum"] == 29998
    assert {"tproxyMark", "tproxyUpstreamConnMark"} <= props.keys()
