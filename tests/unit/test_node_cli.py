"""`l7scope node aggregate`: saved Reports (protobuf JSON lines) -> the records the agent writes."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from google.protobuf import json_format

from l7scope.cli import main
from l7scope.contracts.record import decode_record
from l7scope.testing.node_inputs import http_data, report, shop


def test_aggregate_command(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "shop.yaml").write_text(yaml.safe_dump_all(shop()))
    settings = tmp_path / "node.yaml"
    settings.write_text("l7LogsFilePerNodeLimit: 1\n")
    lines = [json_format.MessageToJson(report([http_data(path="/a", count=2)]), indent=None),
             json_format.MessageToJson(report([http_data(path="/b", count=3)], sport=1),
                                       indent=None),
             "not json",
             json_format.MessageToJson(report([], seen=4), indent=None)]
    res = CliRunner().invoke(main, ["node", "aggregate", "--settings", str(settings),
                                    "--inventory", str(inv), "--node-name", "node-a",
                                    "--start", "100", "--end", "101"],
                             input="\n".join(lines) + "\n")
    assert res.exit_code == 0, res.output
    out = [decode_record(x) for x in res.stdout.splitlines()]
    assert [(r.url, r.count, r.type) for r in out] == [("cart/a", 2, "-"), ("", 7, "unlogged")]
    assert out[0].src_name_aggr == "frontend-7bbcdbbcbf-*"
    assert all((r.start_time, r.end_time, r.requests_seen) == (100, 101, 9) for r in out)
    assert "line 3: skipped" in res.stderr


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    settings = tmp_path / "node.yaml"
    settings.write_text("tproxyMode: Sometimes\n")
    res = CliRunner().invoke(main, ["node", "aggregate", "--settings", str(settings)], input="")
    assert res.exit_code != 0 and "tproxyMode" in res.output
