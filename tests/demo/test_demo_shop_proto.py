"""The committed shop stubs match shop.proto (regenerate: python -m l7scope.demo.shop.regen)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from l7scope.demo.shop import regen, shop_pb2

SRC = Path(__file__).resolve().parents[2] / "src"


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *regen.protoc_args(tmp_path)],
                   check=True)
    for name in ("shop_pb2.py", "shop_pb2.pyi", "shop_pb2_grpc.py"):
        fresh = (tmp_path / "l7scope/demo/shop" / name).read_text()
        assert fresh == (SRC / "l7scope/demo/shop" / name).read_text(), (
            f"run `python -m l7scope.demo.shop.regen`: {name} is stale")


def test_services_are_online_boutiques() -> None:
    names = {s.full_name for s in shop_pb2.DESCRIPTOR.services_by_name.values()}
    assert names == {f"boutique.{n}" for n in (
        "CartService", "ProductCatalogService", "RecommendationService", "CurrencyService",
        "ShippingService", "PaymentService", "EmailService", "CheckoutService", "AdService")}
