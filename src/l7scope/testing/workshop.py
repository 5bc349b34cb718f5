"""The workshop's ApplicationLayer (`../shared/seed/enable-l7-visibility.md`, step 2, with our
apiVersion), as the unit, kube and real-node tests apply it."""

from __future__ import annotations

from typing import Final

AL_PATH: Final = "/apis/l7scope.io/v1/applicationlayers/tigera-secure"
WORKSHOP_AL: Final = """\
apiVersion: l7scope.io/v1
kind: ApplicationLayer
metadata:
  name: tigera-secure
spec:
  logCollection:
    collectLogs: Enabled
    logIntervalSeconds: 5
    logRequestsPerInterval: -1
"""
