"""The generated Policy Sync stubs match policysync.proto, and field numbers are Felix's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from l7scope.contracts import policysync_pb2

SRC = Path(__file__).resolve().parents[2] / "src"


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{SRC}", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", "l7scope/contracts/policysync.proto"],
        check=True,
    )
    for name in ("policysync_pb2.py", "policysync_pb2_grpc.py"):
        fresh = (tmp_path / "l7scope/contracts" / name).read_text()
        assert fresh == (SRC / "l7scope/contracts" / name).read_text(), f"run `make proto`: {name}"


def test_felix_field_numbers() -> None:
    ds = policysync_pb2.DataplaneStats.DESCRIPTOR.fields_by_name
    assert {n: ds[n].number for n in ("src_ip", "dst_ip", "src_port", "dst_port", "protocol",
                                      "stats", "action", "http_data")} == {
        "src_ip": 1, "dst_ip": 2, "src_port": 3, "dst_port": 4, "protocol": 5, "stats": 6,
        "action": 8, "http_data": 9}
    hd = policysync_pb2.HTTPData.DESCRIPTOR.fields_by_name
    expected = {"duration": 3, "response_code": 4, "bytes_sent": 5, "bytes_received": 6,
                "user_agent": 7, "request_path": 8, "request_method": 9, "count": 10,
                "domain": 11, "duration_max": 12, "type": 13, "latency": 14, "upstream_host": 36}
    assert {n: hd[n].number for n in expected} == expected
    assert policysync_pb2.DESCRIPTOR.services_by_name["PolicySync"].full_name == "felix.PolicySync"
    assert policysync_pb2.Statistic.HTTP_DATA == 3 and policysync_pb2.Statistic.DELTA == 1
