"""The shop's gRPC services. Each one does a little real work, calls the Services Online
Boutique's version calls, and misbehaves now and then (`faults.py`)."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from l7scope.demo.shop import catalog, faults
from l7scope.demo.shop import shop_pb2 as pb
from l7scope.demo.shop import shop_pb2_grpc as rpc
from l7scope.demo.shop.clients import Backend
from l7scope.demo.shop.counts import CallCounts
from l7scope.demo.shop.redis_cart import RedisClient


class _Base:
    service = ""

    def __init__(self, peers: Mapping[str, Backend], rng: random.Random) -> None:
        self.peers = peers
        self._rng = rng
        self._rng_lock = threading.Lock()

    def misbehave(self, method: str, context: grpc.ServicerContext) -> None:
        with self._rng_lock:
            delay, error = faults.fault_for(self.service, method).decide(self._rng)
        if delay:
            time.sleep(delay)
        if error:
            context.abort(getattr(grpc.StatusCode, error), f"{self.service}: injected {error}")

    def chance(self, p: float) -> bool:
        with self._rng_lock:
            return self._rng.random() < p


def _money(units: int, nanos: int, code: str = "USD") -> pb.Money:
    return pb.Money(currency_code=code, units=units, nanos=nanos)


def _conversion(money: pb.Money, to_code: str) -> pb.CurrencyConversionRequest:
    req = pb.CurrencyConversionRequest(to_code=to_code)
    getattr(req, "from").CopyFrom(money)  # `from` is a Python keyword
    return req


def _product(p: catalog.Product) -> pb.Product:
    return pb.Product(id=p.id, name=p.name, description=f"A fine {p.name.lower()}.",
                      price_usd=_money(p.price_units, p.price_nanos),
                      categories=list(p.categories))


class ProductCatalog(_Base, rpc.ProductCatalogServiceServicer):
    service = "productcatalogservice"

    def ListProducts(self, request: pb.Empty, context: grpc.ServicerContext) -> Any:
        self.misbehave("ListProducts", context)
        return pb.ListProductsResponse(products=[_product(p) for p in catalog.PRODUCTS])

    def GetProduct(self, request: pb.GetProductRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("GetProduct", context)
        p = catalog.PRODUCTS_BY_ID.get(request.id)
        if p is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no product with ID {request.id}")
            raise AssertionError("abort raises")
        return _product(p)


class Currency(_Base, rpc.CurrencyServiceServicer):
    service = "currencyservice"

    def GetSupportedCurrencies(self, request: pb.Empty, context: grpc.ServicerContext) -> Any:
        self.misbehave("GetSupportedCurrencies", context)
        return pb.GetSupportedCurrenciesResponse(currency_codes=list(catalog.CURRENCIES))

    def Convert(self, request: pb.CurrencyConversionRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("Convert", context)
        src = getattr(request, "from")
        try:
            units, nanos = catalog.convert(src.units, src.nanos, src.currency_code, request.to_code)
        except KeyError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported currency {e}")
        return _money(units, nanos, request.to_code)


class Payment(_Base, rpc.PaymentServiceServicer):
    service = "paymentservice"

    def Charge(self, request: pb.ChargeRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("Charge", context)
        card = request.credit_card
        if not card.credit_card_number.startswith(("4", "5")) or self.chance(faults.DECLINE_RATE):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "credit card declined: the issuer refused the charge")
        return pb.ChargeResponse(transaction_id=str(uuid.uuid4()))


class Shipping(_Base, rpc.ShippingServiceServicer):
    service = "shippingservice"

    def GetQuote(self, request: pb.GetQuoteRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("GetQuote", context)
        n = sum(i.quantity for i in request.items)
        return pb.GetQuoteResponse(cost_usd=_money(0 if n == 0 else 8, 990_000_000 if n else 0))

    def ShipOrder(self, request: pb.ShipOrderRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("ShipOrder", context)
        return pb.ShipOrderResponse(tracking_id=uuid.uuid4().hex[:18].upper())


class Email(_Base, rpc.EmailServiceServicer):
    service = "emailservice"

    def SendOrderConfirmation(self, request: pb.SendOrderConfirmationRequest,
                              context: grpc.ServicerContext) -> Any:
        self.misbehave("SendOrderConfirmation", context)
        return pb.Empty()


class Ads(_Base, rpc.AdServiceServicer):
    service = "adservice"
    ADS = {
        "clothing": "Tank top for sale. 20% off.",
        "accessories": "Watch for sale. Buy one, get second kit for free",
        "footwear": "Loafers for sale. Buy one, get the second one for free",
        "hair": "Hairdryer for sale. 50% off.",
        "decor": "Candle holder for sale. 30% off.",
        "kitchen": "Bamboo glass jar for sale. 10% off.",
    }

    def GetAds(self, request: pb.AdRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("GetAds", context)
        keys = [k for k in request.context_keys if k in self.ADS] or list(self.ADS)[:1]
        return pb.AdResponse(ads=[pb.Ad(redirect_url="/product/OLJCESPC7Z", text=self.ADS[k])
                                  for k in keys[:2]])


class Cart(_Base, rpc.CartServiceServicer):
    """Carts live in redis-cart, one JSON value per user; one TCP connection per operation."""

    service = "cartservice"

    def __init__(self, peers: Mapping[str, Backend], rng: random.Random,
                 redis: RedisClient, counts: CallCounts) -> None:
        super().__init__(peers, rng)
        self._redis = redis
        self._counts = counts

    def _with_conn(self, context: grpc.ServicerContext,
                   work: Callable[[socket.socket], list[object]]) -> list[object]:
        """Run `work` on a fresh connection to redis-cart (one operation, one connection)."""
        try:
            sock = self._redis.connect()
        except OSError as e:
            self._counts.failed("redis-cart")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"redis-cart unreachable: {e}")
            raise AssertionError("abort raises") from e
        try:
            return work(sock)
        except (OSError, EOFError, ValueError) as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"redis-cart failed: {e}")
            raise AssertionError("abort raises") from e
        finally:
            sock.close()
            self._counts.completed("redis-cart")

    @staticmethod
    def _items(raw: object) -> dict[str, int]:
        if not isinstance(raw, bytes):
            return {}
        try:
            return {str(k): int(v) for k, v in json.loads(raw).items()}
        except (ValueError, AttributeError):
            return {}

    def AddItem(self, request: pb.AddItemRequest, context: grpc.ServicerContext) -> Any:
        key = b"cart:" + request.user_id.encode()

        def work(sock: socket.socket) -> list[object]:
            (raw,) = self._redis.run(sock, (b"GET", key))
            items = self._items(raw)
            pid = request.item.product_id
            items[pid] = items.get(pid, 0) + max(1, request.item.quantity)
            return self._redis.run(sock, (b"SET", key, json.dumps(items).encode()))

        self._with_conn(context, work)
        return pb.Empty()

    def GetCart(self, request: pb.GetCartRequest, context: grpc.ServicerContext) -> Any:
        key = b"cart:" + request.user_id.encode()
        (raw,) = self._with_conn(context, lambda sock: self._redis.run(sock, (b"GET", key)))
        items = self._items(raw)
        return pb.Cart(user_id=request.user_id, items=[
            pb.CartItem(product_id=k, quantity=v) for k, v in sorted(items.items())])

    def EmptyCart(self, request: pb.GetCartRequest, context: grpc.ServicerContext) -> Any:
        key = b"cart:" + request.user_id.encode()
        self._with_conn(context, lambda sock: self._redis.run(sock, (b"DEL", key)))
        return pb.Empty()


class Recommendation(_Base, rpc.RecommendationServiceServicer):
    service = "recommendationservice"

    def ListRecommendations(self, request: pb.ListRecommendationsRequest,
                            context: grpc.ServicerContext) -> Any:
        self.misbehave("ListRecommendations", context)
        catalog_ = self.peers["productcatalogservice"]
        products = catalog_.call(catalog_.stub.ListProducts, pb.Empty()).products
        candidates = [p.id for p in products if p.id not in set(request.product_ids)]
        with self._rng_lock:
            picked = self._rng.sample(candidates, min(4, len(candidates)))
        return pb.ListRecommendationsResponse(product_ids=picked)


class Checkout(_Base, rpc.CheckoutServiceServicer):
    service = "checkoutservice"

    def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.ServicerContext) -> Any:
        self.misbehave("PlaceOrder", context)
        p = self.peers
        try:
            cart = p["cartservice"].call(p["cartservice"].stub.GetCart,
                                         pb.GetCartRequest(user_id=request.user_id))
            order_items = []
            for item in cart.items:
                prod = p["productcatalogservice"].call(
                    p["productcatalogservice"].stub.GetProduct, pb.GetProductRequest(id=item.product_id))
                price = p["currencyservice"].call(
                    p["currencyservice"].stub.Convert,
                    _conversion(prod.price_usd, request.user_currency))
                order_items.append(pb.OrderItem(item=item, cost=price))
            quote = p["shippingservice"].call(
                p["shippingservice"].stub.GetQuote,
                pb.GetQuoteRequest(address=request.address, items=cart.items))
            shipping = p["currencyservice"].call(
                p["currencyservice"].stub.Convert,
                _conversion(quote.cost_usd, request.user_currency))
            total = shipping.units + sum(i.cost.units * i.item.quantity for i in order_items)
            p["paymentservice"].call(
                p["paymentservice"].stub.Charge,
                pb.ChargeRequest(amount=_money(total, 0, request.user_currency),
                                 credit_card=request.credit_card))
            tracking = p["shippingservice"].call(
                p["shippingservice"].stub.ShipOrder,
                pb.ShipOrderRequest(address=request.address, items=cart.items)).tracking_id
            p["cartservice"].call(p["cartservice"].stub.EmptyCart,
                                  pb.GetCartRequest(user_id=request.user_id))
            order = pb.OrderResult(order_id=str(uuid.uuid4()), shipping_tracking_id=tracking,
                                   shipping_cost=shipping, shipping_address=request.address,
                                   items=order_items)
            with contextlib.suppress(grpc.RpcError):  # a failed e-mail does not fail the order
                p["emailservice"].call(p["emailservice"].stub.SendOrderConfirmation,
                                       pb.SendOrderConfirmationRequest(email=request.email,
                                                                       order=order))
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            context.abort(code or grpc.StatusCode.INTERNAL, f"failed to place order: {details}")
            raise AssertionError("abort raises") from e
        return pb.PlaceOrderResponse(order=order)


#: service name -> (servicer factory taking (peers, rng), register function)
SERVICERS: dict[str, tuple[Callable[..., Any], Callable[[Any, grpc.Server], None]]] = {
    "productcatalogservice": (ProductCatalog, rpc.add_ProductCatalogServiceServicer_to_server),
    "currencyservice": (Currency, rpc.add_CurrencyServiceServicer_to_server),
    "paymentservice": (Payment, rpc.add_PaymentServiceServicer_to_server),
    "shippingservice": (Shipping, rpc.add_ShippingServiceServicer_to_server),
    "emailservice": (Email, rpc.add_EmailServiceServicer_to_server),
    "adservice": (Ads, rpc.add_AdServiceServicer_to_server),
    "cartservice": (Cart, rpc.add_CartServiceServicer_to_server),
    "recommendationservice": (Recommendation, rpc.add_RecommendationServiceServicer_to_server),
    "checkoutservice": (Checkout, rpc.add_CheckoutServiceServicer_to_server),
}

#: Stub class of each gRPC Service (used by callers).
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "productcatalogservice": rpc.ProductCatalogServiceStub,
    "currencyservice": rpc.CurrencyServiceStub,
    "paymentservice": rpc.PaymentServiceStub,
    "shippingservice": rpc.ShippingServiceStub,
    "emailservice": rpc.EmailServiceStub,
    "adservice": rpc.AdServiceStub,
    "cartservice": rpc.CartServiceStub,
    "recommendationservice": rpc.RecommendationServiceStub,
    "checkoutservice": rpc.CheckoutServiceStub,
}
