"""kubectl habits (issue 19 part 3) against the real kube-apiserver and the real kubectl:
the CRDs' short names and the `l7scope` category (`kubectl get l7scope` lists every resource),
and the ApplicationLayer's printer columns (state, interval, nodes ready)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from kubeharness import ControlPlane

from l7scope.contracts import nodeconfig
from l7scope.kube.client import Kube
from l7scope.operator import crd
from l7scope.operator import spec as alspec

pytestmark = pytest.mark.kube


def test_short_names_category_and_printer_columns(control_plane: ControlPlane, kube: Kube,
                                                  tmp_path: Path) -> None:
    crds = crd.all_crds()
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    tag = uuid.uuid4().hex[:6]
    al_name, nac_name = f"habits-{tag}", f"habits-{tag}"
    kube.create({"apiVersion": alspec.API_VERSION, "kind": alspec.KIND,
                 "metadata": {"name": al_name},
                 "spec": {"logCollection": {"collectLogs": "Enabled", "logIntervalSeconds": 7}}})
    kube.create({"apiVersion": nodeconfig.API_VERSION, "kind": nodeconfig.KIND,
                 "metadata": {"name": nac_name}, "spec": {}})
    # a fresh discovery cache: kubectl's own cache predates the CRDs (a user's would expire)
    cache = ("--cache-dir", str(tmp_path / "kube-cache"))
    try:
        kube.merge_patch(f"/apis/{alspec.API_VERSION}/{alspec.PLURAL}/{al_name}/status",
                         {"status": {"state": "Ready", "nodesReady": "2/3"}})
        listed = control_plane.kubectl(*cache, "get", "l7scope", "-o", "name").stdout.split()
        assert f"applicationlayer.l7scope.io/{al_name}" in listed, listed
        assert f"nodeagentconfiguration.l7scope.io/{nac_name}" in listed, listed

        table = control_plane.kubectl(*cache, "get", "l7al", al_name).stdout.splitlines()
        header = table[0].split()
        assert header[:2] == ["NAME", "LOGS"] and "INTERVAL" in header and "STATE" in header
        assert "NODES" in header and "READY" in header, table
        row = table[1].split()
        assert row[:5] == [al_name, "Enabled", "7", "Ready", "2/3"], table

        nac = control_plane.kubectl(*cache, "get", "l7nac", nac_name, "-o", "name").stdout.strip()
        assert nac == f"nodeagentconfiguration.l7scope.io/{nac_name}"
        bad = control_plane.kubectl(*cache, "get", "l7nope", check=False)
        assert bad.returncode != 0  # the short names are real lookups, not a catch-all
    finally:
        kube.delete(f"/apis/{alspec.API_VERSION}/{alspec.PLURAL}/{al_name}")
        kube.delete(f"/apis/{nodeconfig.API_VERSION}/{nodeconfig.PLURAL}/{nac_name}")
