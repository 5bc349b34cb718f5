"""Node settings: Felix names and defaults, validation errors naming the key, live re-read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l7scope.node import settings as st


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
                    "l7LogsFilePerNodeLimit": 0, "policySyncPathPrefix": "/tmp/x"}}
    s = st.from_mapping(obj)
    assert s.tproxy_mode == "EnabledAllServices"
    assert s.l7_logs_flush_interval == 300.0
    assert s.aggregation().trim_url == "TrimURLQuery"
    assert s.aggregation().per_node_limit == 0
    assert s.socket_path() == Path("/tmp/x/socket")


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
    f = st.SettingsFile(p)
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
