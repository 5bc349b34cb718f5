"""The capture's policy route in a real network namespace: apply leaves exactly one fwmark
rule for its table (an older version's mark 0x1000000, inside Felix's mask, and duplicates are
removed), and remove leaves none."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from l7scope.capture import tproxy
from l7scope.netlab.sh import ip, run

pytestmark = [pytest.mark.netns]


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or not (shutil.which("nft") and shutil.which("ip")):
        pytest.skip("needs root, nftables and iproute2")
    name = f"l7pr-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False)


def test_apply_keeps_one_rule_and_remove_leaves_none(netns: str) -> None:
    rules = tproxy.Rules()
    table = str(rules.route_table)
    ip("rule", "add", "fwmark", "0x1000000/0x1000000", "lookup", table, netns=netns)  # old
    ip("rule", "add", "fwmark", "0x1000/0x1000", "lookup", table, netns=netns)
    ip("rule", "add", "fwmark", "0x1000/0x1000", "lookup", table, netns=netns)  # duplicate
    ip("rule", "add", "fwmark", "0x1000000/0x1000000", "lookup", "main", netns=netns)  # not ours
    sel = tproxy.Selection.of([("10.96.0.10", 80)], ["10.244.0.0/24"])
    tproxy.apply(sel, rules, netns=netns)
    assert [m for _, m in tproxy.policy_rules(rules, netns)] == ["0x1000/0x1000"]
    assert tproxy.installed(rules, netns) == sel
    assert "local default dev lo" in ip("route", "show", "table", table, netns=netns)
    tproxy.apply(sel, rules, netns=netns)  # idempotent
    assert len(tproxy.policy_rules(rules, netns)) == 1

    tproxy.remove(rules, netns=netns)
    assert tproxy.policy_rules(rules, netns) == []
    assert tproxy.installed(rules, netns) is None
    assert ip("route", "show", "table", table, netns=netns).strip() == ""
    assert "fwmark 0x1000000/0x1000000 lookup main" in ip("rule", "show", netns=netns)
