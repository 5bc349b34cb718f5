"""`frontend`: the shop's web front end (HTTP/1.1), calling the gRPC backends per page the way
Online Boutique's frontend does.

Pages: `GET /`, `GET /product/<id>`, `GET /cart`, `POST /cart` (add; form `product_id`,
`quantity`), `POST /cart/empty`, `POST /cart/checkout`, `POST /setCurrency` (form
`currency_code`), `GET /_healthz`. A session cookie names the user; a currency cookie the
currency. Backend failures become 500 pages (ads and recommendations are optional, as in the
real shop); an unknown product is a 404.
"""

from __future__ import annotations

import html
import http.server
import threading
import uuid
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import grpc

from l7scope.demo.shop import catalog
from l7scope.demo.shop import shop_pb2 as pb
from l7scope.demo.shop.clients import Backend

SESSION_COOKIE = "shop_session-id"
CURRENCY_COOKIE = "shop_currency"
MAX_BODY = 64 * 1024


class NotFound(Exception):
    pass


class Shop:
    """The page logic, separate from HTTP plumbing."""

    def __init__(self, peers: Mapping[str, Backend]) -> None:
        self.p = peers

    def _call(self, svc: str, method: str, request: object) -> Any:
        b = self.p[svc]
        return b.call(getattr(b.stub, method), request)

    def _optional(self, svc: str, method: str, request: object) -> Any:
        try:
            return self._call(svc, method, request)
        except grpc.RpcError:
            return None

    def _price(self, money: pb.Money, currency: str) -> pb.Money:
        if money.currency_code == currency:
            return money
        converted: pb.Money = self._call("currencyservice", "Convert", _conversion(money, currency))
        return converted

    def home(self, user: str, currency: str) -> str:
        currencies = self._call("currencyservice", "GetSupportedCurrencies", pb.Empty())
        products = self._call("productcatalogservice", "ListProducts", pb.Empty()).products
        cart = self._call("cartservice", "GetCart", pb.GetCartRequest(user_id=user))
        rows = []
        for p in products[:4]:  # the real page converts every product; four keep the demo light
            price = self._price(p.price_usd, currency)
            rows.append(f"<li>{html.escape(p.name)}: {price.units}.{price.nanos // 10**7:02d}"
                        f" {html.escape(price.currency_code)}</li>")
        ads = self._optional("adservice", "GetAds", pb.AdRequest())
        return _page("Online Boutique", f"<p>{len(cart.items)} in cart; currencies:"
                     f" {len(currencies.currency_codes)}</p><ul>{''.join(rows)}</ul>"
                     f"{_ad(ads)}")

    def product(self, user: str, currency: str, product_id: str) -> str:
        try:
            p = self._call("productcatalogservice", "GetProduct",
                           pb.GetProductRequest(id=product_id))
        except grpc.RpcError as e:
            if hasattr(e, "code") and e.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(product_id) from e
            raise
        self._call("currencyservice", "GetSupportedCurrencies", pb.Empty())
        cart = self._call("cartservice", "GetCart", pb.GetCartRequest(user_id=user))
        price = self._price(p.price_usd, currency)
        recs = self._optional("recommendationservice", "ListRecommendations",
                              pb.ListRecommendationsRequest(user_id=user, product_ids=[p.id]))
        ads = self._optional("adservice", "GetAds", pb.AdRequest(context_keys=list(p.categories)))
        n_recs = len(recs.product_ids) if recs is not None else 0
        return _page(p.name, f"<p>{price.units} {html.escape(price.currency_code)}</p>"
                     f"<p>{len(cart.items)} in cart, {n_recs} recommendations</p>{_ad(ads)}")

    def view_cart(self, user: str, currency: str) -> str:
        self._call("currencyservice", "GetSupportedCurrencies", pb.Empty())
        cart = self._call("cartservice", "GetCart", pb.GetCartRequest(user_id=user))
        recs = self._optional("recommendationservice", "ListRecommendations",
                              pb.ListRecommendationsRequest(
                                  user_id=user, product_ids=[i.product_id for i in cart.items]))
        quote = self._call("shippingservice", "GetQuote", pb.GetQuoteRequest(items=cart.items))
        self._price(quote.cost_usd, currency)
        lines = []
        for item in cart.items:
            p = self._call("productcatalogservice", "GetProduct",
                           pb.GetProductRequest(id=item.product_id))
            price = self._price(p.price_usd, currency)
            lines.append(f"<li>{html.escape(p.name)} x{item.quantity}: {price.units}</li>")
        n_recs = len(recs.product_ids) if recs is not None else 0
        return _page("Cart", f"<ul>{''.join(lines)}</ul><p>{n_recs} recommendations</p>")

    def add_to_cart(self, user: str, product_id: str, quantity: int) -> None:
        try:
            self._call("productcatalogservice", "GetProduct", pb.GetProductRequest(id=product_id))
        except grpc.RpcError as e:
            if hasattr(e, "code") and e.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(product_id) from e
            raise
        self._call("cartservice", "AddItem", pb.AddItemRequest(
            user_id=user, item=pb.CartItem(product_id=product_id, quantity=quantity)))

    def empty_cart(self, user: str) -> None:
        self._call("cartservice", "EmptyCart", pb.GetCartRequest(user_id=user))

    def checkout(self, user: str, currency: str, email: str) -> str:
        order = self._call("checkoutservice", "PlaceOrder", pb.PlaceOrderRequest(
            user_id=user, user_currency=currency, email=email,
            address=pb.Address(street_address="1600 Amphitheatre Parkway",
                               city="Mountain View", country="United States", zip_code=94043),
            credit_card=pb.CreditCardInfo(credit_card_number="4432801561520454",
                                          credit_card_cvv=672,
                                          credit_card_expiration_year=2030,
                                          credit_card_expiration_month=1))).order
        recs = self._optional("recommendationservice", "ListRecommendations",
                              pb.ListRecommendationsRequest(user_id=user))
        n_recs = len(recs.product_ids) if recs is not None else 0
        return _page("Order placed", f"<p>Order {html.escape(order.order_id)}, tracking"
                     f" {html.escape(order.shipping_tracking_id)}; {n_recs} recommendations</p>")


def _conversion(money: pb.Money, to_code: str) -> pb.CurrencyConversionRequest:
    req = pb.CurrencyConversionRequest(to_code=to_code)
    getattr(req, "from").CopyFrom(money)  # `from` is a Python keyword
    return req


def _ad(ads: Any) -> str:
    if ads is None or not ads.ads:
        return ""
    return f"<aside>{html.escape(ads.ads[0].text)}</aside>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "boutique-frontend/1.0"
    disable_nagle_algorithm = True
    server: FrontendServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _cookies(self) -> tuple[str, str, list[str]]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header is ignored, as browsers do
            jar = SimpleCookie()
        set_cookies: list[str] = []
        user = jar[SESSION_COOKIE].value if SESSION_COOKIE in jar else ""
        if not user:
            user = str(uuid.uuid4())
            set_cookies.append(f"{SESSION_COOKIE}={user}; Path=/; HttpOnly")
        currency = jar[CURRENCY_COOKIE].value if CURRENCY_COOKIE in jar else "USD"
        if currency not in catalog.EUR_RATES:
            currency = "USD"
        return user, currency, set_cookies

    def _form(self) -> dict[str, str]:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = 0
        if not 0 <= n <= MAX_BODY:
            n = 0
        raw = self.rfile.read(n).decode(errors="replace") if n else ""
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def _send(self, code: int, body: str, cookies: list[str], location: str | None = None) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for c in cookies:
            self.send_header("Set-Cookie", c)
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_healthz":
            self._send(200, "ok", [])
            return
        user, currency, cookies = self._cookies()
        shop = self.server.shop
        try:
            if method == "GET" and path == "/":
                self._send(200, shop.home(user, currency), cookies)
            elif method == "GET" and path.startswith("/product/"):
                self._send(200, shop.product(user, currency, path[len("/product/"):]), cookies)
            elif method == "GET" and path == "/cart":
                self._send(200, shop.view_cart(user, currency), cookies)
            elif method == "POST" and path == "/cart":
                form = self._form()
                qty = int(form.get("quantity", "1")) if form.get("quantity", "1").isdigit() else 1
                shop.add_to_cart(user, form.get("product_id", ""), qty)
                self._send(302, "", cookies, "/cart")
            elif method == "POST" and path == "/cart/empty":
                shop.empty_cart(user)
                self._send(302, "", cookies, "/")
            elif method == "POST" and path == "/cart/checkout":
                form = self._form()
                self._send(200, shop.checkout(user, currency, form.get("email", "x@example.com")),
                           cookies)
            elif method == "POST" and path == "/setCurrency":
                code = self._form().get("currency_code", "USD")
                if code not in catalog.EUR_RATES:
                    self._send(422, _page("Error", "unsupported currency"), cookies)
                    return
                self._send(302, "", [*cookies, f"{CURRENCY_COOKIE}={code}; Path=/"], "/")
            else:
                self._send(404, _page("Not found", "no such page"), cookies)
        except NotFound:
            self._send(404, _page("Not found", "no such product"), cookies)
        except grpc.RpcError as e:
            details = e.details() if hasattr(e, "details") else str(e)
            self._send(500, _page("Uh, oh!", f"<pre>{html.escape(str(details))}</pre>"), cookies)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class FrontendServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], shop: Shop) -> None:
        self.shop = shop
        super().__init__(addr, _Handler)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="frontend", daemon=True)
        t.start()
        return t
