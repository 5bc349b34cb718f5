"""Realistic misbehaviour of the shop's services: some slow calls and a few errors.

`Fault.decide(rng)` is pure given the random source, so tests can pin it. The rates are small
enough that the shop works, and large enough that a minute of traffic shows slow routes and
non-OK gRPC statuses in the Service Graph.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Fault:
    error_rate: float = 0.0  # fraction of calls that fail with `error`
    error: str = "INTERNAL"  # a grpc.StatusCode name
    slow_rate: float = 0.0  # fraction of calls that take `slow_s` longer
    slow_s: tuple[float, float] = (0.1, 0.3)  # uniform range, seconds

    def decide(self, rng: random.Random) -> tuple[float, str | None]:
        """(seconds to sleep, status code name to fail with or None)."""
        delay = rng.uniform(*self.slow_s) if rng.random() < self.slow_rate else 0.0
        error = self.error if rng.random() < self.error_rate else None
        return delay, error


NONE: Final = Fault()

#: (service, method) -> behaviour. Payment declines are handled by the payment service itself.
FAULTS: Final[dict[tuple[str, str], Fault]] = {
    ("currencyservice", "Convert"): Fault(error_rate=0.005, error="INTERNAL"),
    ("productcatalogservice", "GetProduct"): Fault(slow_rate=0.02, slow_s=(0.15, 0.35)),
    ("recommendationservice", "ListRecommendations"): Fault(error_rate=0.01, error="UNAVAILABLE"),
    ("shippingservice", "GetQuote"): Fault(slow_rate=0.05, slow_s=(0.1, 0.4)),
    ("emailservice", "SendOrderConfirmation"): Fault(slow_rate=0.1, slow_s=(0.2, 0.5)),
    ("adservice", "GetAds"): Fault(error_rate=0.01, error="RESOURCE_EXHAUSTED",
                                   slow_rate=0.03, slow_s=(0.05, 0.15)),
}

#: Fraction of card charges the payment service declines (INVALID_ARGUMENT, as the real shop).
DECLINE_RATE: Final = 0.08


def fault_for(service: str, method: str) -> Fault:
    return FAULTS.get((service, method), NONE)
