"""The shop's services and data: which Service listens where and calls whom, the products and
the currencies. Plain data, shared by the pods, the load generator and the topology."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ShopService:
    """One Service of the shop (one pod behind it)."""

    name: str
    port: int  # Service port (what clients dial on the VIP)
    target_port: int  # container port the pod listens on
    port_name: str  # Service port name (http, grpc, tcp-redis)
    calls: tuple[str, ...]  # Services this one calls, as in Online Boutique


#: The eleven Services, in the order they start (dependencies first). Ports are Online Boutique's.
SERVICES: Final[tuple[ShopService, ...]] = (
    ShopService("redis-cart", 6379, 6379, "tcp-redis", ()),
    ShopService("productcatalogservice", 3550, 3550, "grpc", ()),
    ShopService("currencyservice", 7000, 7000, "grpc", ()),
    ShopService("paymentservice", 50051, 50051, "grpc", ()),
    ShopService("shippingservice", 50051, 50051, "grpc", ()),
    ShopService("emailservice", 5000, 8080, "grpc", ()),
    ShopService("adservice", 9555, 9555, "grpc", ()),
    ShopService("cartservice", 7070, 7070, "grpc", ("redis-cart",)),
    ShopService("recommendationservice", 8080, 8080, "grpc", ("productcatalogservice",)),
    ShopService("checkoutservice", 5050, 5050, "grpc", (
        "cartservice", "productcatalogservice", "currencyservice", "shippingservice",
        "paymentservice", "emailservice")),
    ShopService("frontend", 80, 8080, "http", (
        "adservice", "cartservice", "checkoutservice", "currencyservice",
        "productcatalogservice", "recommendationservice", "shippingservice")),
)

BY_NAME: Final[dict[str, ShopService]] = {s.name: s for s in SERVICES}

#: The client pod that drives the shop (not a Service; like Online Boutique's loadgenerator).
LOADGEN: Final = "loadgenerator"


def edges() -> set[tuple[str, str]]:
    """Every (caller, callee) pair of the shop, including the load generator's."""
    out = {(s.name, c) for s in SERVICES for c in s.calls}
    out.add((LOADGEN, "frontend"))
    return out


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    price_units: int
    price_nanos: int
    categories: tuple[str, ...]


PRODUCTS: Final[tuple[Product, ...]] = (
    Product("OLJCESPC7Z", "Sunglasses", 19, 990_000_000, ("accessories",)),
    Product("66VCHSJNUP", "Tank Top", 18, 990_000_000, ("clothing", "tops")),
    Product("1YMWWN1N4O", "Watch", 109, 990_000_000, ("accessories",)),
    Product("L9ECAV7KIM", "Loafers", 89, 990_000_000, ("footwear",)),
    Product("2ZYFJ3GM2N", "Hairdryer", 24, 990_000_000, ("hair", "beauty")),
    Product("0PUK6V6EV0", "Candle Holder", 18, 990_000_000, ("decor", "home")),
    Product("LS4PSXUNUM", "Salt & Pepper Shakers", 18, 490_000_000, ("kitchen",)),
    Product("9SIQT8TOJO", "Bamboo Glass Jar", 5, 490_000_000, ("kitchen",)),
    Product("6E92ZMYYFZ", "Mug", 8, 990_000_000, ("kitchen",)),
)
PRODUCT_IDS: Final[tuple[str, ...]] = tuple(p.id for p in PRODUCTS)
PRODUCTS_BY_ID: Final[dict[str, Product]] = {p.id: p for p in PRODUCTS}

#: Units of each currency per euro (rounded).
EUR_RATES: Final[dict[str, float]] = {
    "EUR": 1.0, "USD": 1.1305, "JPY": 126.40, "GBP": 0.85970, "CAD": 1.5128, "TRY": 6.1593,
}
CURRENCIES: Final[tuple[str, ...]] = tuple(sorted(EUR_RATES))


def convert(units: int, nanos: int, from_code: str, to_code: str) -> tuple[int, int]:
    """Convert an amount between currencies; KeyError for an unknown code."""
    value = (units + nanos / 1e9) / EUR_RATES[from_code] * EUR_RATES[to_code]
    whole = int(value)
    return whole, int(round((value - whole) * 1e9)) % 1_000_000_000
