"""Route templates (contracts/routes.py) and their use in the aggregation key (node/aggregate.py):
built-in segment rules, user rules, the settings' checks, the cache, and the per-Service
cardinality bound with its counted `/{other}` bucket."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from l7scope.contracts.nodeconfig import AggregationSettings, from_mapping
from l7scope.contracts.routes import OTHER_ROUTE, RouteSettings, Templater, builtin_segment
from l7scope.node.aggregate import Aggregator, Update
from l7scope.node.enrich import Endpoint, ServiceRef

SRC = Endpoint("wep", "shop", "frontend-*")
DST = Endpoint("wep", "shop", "cart-*")
SVC = ServiceRef("cart", "shop", "http", 80)


@pytest.mark.parametrize(("seg", "want"), [
    ("123", "{int}"), ("0", "{int}"),
    (str(uuid.UUID(int=7)), "{uuid}"), ("6F9619FF-8B86-D011-B42D-00C04FC964FF", "{uuid}"),
    ("deadbeef01", "{hex}"), ("0123abcd", "{hex}"),
    ("MFRGGZDFMZTWQ2LK", "{base32}"), ("mfrggzdfmztwq2lknnwg23tp====", "{base32}"),
    ("products", "products"), ("deadbeef", "deadbeef"),  # hex letters only: a word
    ("abc123", "abc123"),  # short
    ("ABCDEFGHIJKLMNOPQR", "ABCDEFGHIJKLMNOPQR"),  # no base32 digit: a word
    ("MfRGGZDFMZTWQ2LK", "MfRGGZDFMZTWQ2LK"),  # mixed case
    ("OLJCESPC7Z", "OLJCESPC7Z"),  # the demo's ids need a user rule
    ("", ""),
])
def test_builtin_segments(seg: str, want: str) -> None:
    assert builtin_segment(seg) == want


def test_user_rules_first_then_builtin() -> None:
    t = Templater(RouteSettings(rules=("/product/{id}", "/api/{version}/users/{user}")))
    assert t.template("/product/OLJCESPC7Z") == "/product/{id}"
    assert t.template("/product/12") == "/product/{id}"
    assert t.template("/product/") == "/product/"  # an empty segment is no id
    assert t.template("/product/a/b") == "/product/a/b"  # segment count differs
    assert t.template("/api/v2/users/bob") == "/api/{version}/users/{user}"
    assert t.template("/orders/42/items/" + str(uuid.UUID(int=1))) == "/orders/{int}/items/{uuid}"
    assert t.template("/") == "/"
    assert t.template("") == ""


def test_off_and_builtin_off() -> None:
    assert Templater(RouteSettings(enabled=False)).template("/a/123") == "/a/123"
    t = Templater(RouteSettings(builtin=False, rules=("/a/{x}",)))
    assert t.template("/b/123") == "/b/123"
    assert t.template("/a/123") == "/a/{x}"


@pytest.mark.parametrize("rule", ["product/{id}", "/product/x{id}", "/a/{1x}", "/a/{id"])
def test_bad_rules_are_rejected(rule: str) -> None:
    with pytest.raises(ValidationError):
        RouteSettings(rules=(rule,))


def test_settings_forbid_unknown_keys_and_come_from_node_settings() -> None:
    with pytest.raises(ValidationError):
        RouteSettings.model_validate({"enabled": True, "rulez": []})
    s = from_mapping({"l7RouteTemplates": {"rules": ["/product/{id}"], "maxRoutesPerService": 7}})
    assert s.aggregation().routes.rules == ("/product/{id}",)
    assert s.aggregation().routes.max_routes_per_service == 7


def test_cache_is_bounded() -> None:
    t = Templater(RouteSettings.model_validate({"cacheSize": 16}))
    for i in range(40):
        assert t.template(f"/x/{i}") == "/x/{int}"
    assert t.cache_clears == 2


_segment = st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?"), max_size=12)


@given(st.lists(_segment, max_size=6))
def test_templates_keep_the_segment_count_and_are_stable(segs: list[str]) -> None:
    path = "/" + "/".join(segs)
    t = Templater(RouteSettings())
    out = t.template(path)
    assert out.count("/") == path.count("/")
    assert Templater(RouteSettings()).template(out) == out  # a template is its own template
    assert t.template(path) == out  # cached answer == computed answer


@given(st.integers(min_value=0, max_value=10**30), st.uuids())
def test_ids_collapse(n: int, u: uuid.UUID) -> None:
    t = Templater(RouteSettings())
    assert t.template(f"/a/{n}/b/{u}") == "/a/{int}/b/{uuid}"


# ---- in the aggregator ------------------------------------------------------------------------
def upd(path: str, svc: ServiceRef = SVC, count: int = 1) -> Update:
    return Update(src=SRC, src_port=1, dst=DST, dst_port=8080, service=svc, domain="cart.shop",
                  path=path, method="GET", response_code=200, count=count)


def agg(**routes: Any) -> Aggregator:
    return Aggregator(AggregationSettings(routes=RouteSettings(**routes)), "n", 100.0)


def test_product_pages_fold_into_one_record() -> None:
    a = agg(rules=("/product/{id}",))
    for pid in ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O"):
        a.add(upd(f"/product/{pid}?x=1", count=2))
    recs = a.flush(101.0)
    assert [(r.url, r.count) for r in recs] == [("cart.shop/product/{id}", 6)]


def test_cardinality_bound_per_service_counts_other() -> None:
    a = agg(builtin=False, max_routes_per_service=3)
    other_svc = ServiceRef("ads", "shop", "http", 80)
    for i in range(5):
        a.add(upd(f"/p{i}", count=10))
        a.add(upd(f"/q{i}", svc=other_svc))
    a.add(upd("/p0"))  # a known route stays itself
    recs = a.flush(101.0)
    urls = {(r.dest_service_name, r.url): r.count for r in recs}
    assert urls[("cart", "cart.shop/p0")] == 11
    assert urls[("cart", "cart.shop" + OTHER_ROUTE)] == 20
    assert urls[("ads", "cart.shop" + OTHER_ROUTE)] == 2
    assert len([k for k in urls if k[0] == "cart"]) == 4
    assert a.last.requests_route_other == 22 and a.totals.requests_route_other == 22
    assert sum(r.count for r in recs) == a.last.requests_seen == 56
    # the bound is per interval
    a.add(upd("/p4"))
    assert [r.url for r in a.flush(102.0)] == ["cart.shop/p4"]
    assert a.last.requests_route_other == 0 and a.totals.requests_route_other == 22


def test_reload_changes_rules() -> None:
    a = agg()
    a.add(upd("/product/X1"))
    assert a.flush(101.0)[0].url == "cart.shop/product/X1"
    a.settings = AggregationSettings(routes=RouteSettings(rules=("/product/{id}",)))
    a.add(upd("/product/X1"))
    assert a.flush(102.0)[0].url == "cart.shop/product/{id}"


def test_excluded_url_is_not_templated() -> None:
    a = Aggregator(AggregationSettings(trim_url="TrimURLQueryAndPath"), "n", 100.0)
    for i in range(3):
        a.add(upd(f"/x/{i}"))
    assert [r.url for r in a.flush(101.0)] == ["cart.shop"]
