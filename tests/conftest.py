"""Shared fixtures. Tests that need real parts (root + netns, Envoy, ClickHouse, a kube-apiserver,
Chromium) carry a marker and skip with a reason when the part is missing; CI (`make test`, run
as root after scripts/setup.sh) has all of them."""

from __future__ import annotations

import os
import shutil

import pytest


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def require_netns() -> None:
    if not _is_root() or shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs root, nftables and iproute2")
