"""The kopf wiring (operator/handlers.py): a periodic reconcile renews the certificates in time."""

from __future__ import annotations

from typing import Any

from l7scope.operator import handlers, tls
from l7scope.operator.reconcile import OperatorConfig


class _NoKube:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the registry was built without calling the API ({name})")


def test_a_timer_reconciles_the_application_layer_well_inside_the_renewal_window() -> None:
    registry = handlers.build_registry(_NoKube(), OperatorConfig())  # type: ignore[arg-type]
    timers = [h for h in registry._spawning.get_all_handlers()  # kopf keeps timers there
              if type(h).__name__ == "TimerHandler"]
    assert [(h.selector.group, h.selector.any_name) for h in timers] == [
        ("l7scope.io", "applicationlayers")]
    (timer,) = timers
    assert timer.interval == handlers.RENEW_CHECK_S
    # many chances before the server certificate's renewal window closes
    assert tls.SERVER_RENEW_BEFORE.total_seconds() / timer.interval >= 100
