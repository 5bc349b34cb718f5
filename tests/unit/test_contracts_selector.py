"""The selector language (contracts.selector): parsing, error positions, allow-listed fields,
and its parameterized SQL (server.store.selector_sql)."""

from __future__ import annotations

import pytest

from l7scope.contracts import selector as s
from l7scope.server.store.selector_sql import to_sql


class Params:
    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def add(self, value: object) -> str:
        k = f"p{len(self.values)}"
        self.values[k] = value
        return f"${k}"

    def regex(self, column_sql: str, placeholder: str) -> str:
        return f"re({column_sql}, {placeholder})"

    def text_match(self, kind: str, column_sql: str, placeholder: str) -> str:
        return f"{kind}({column_sql}, {placeholder})"


def sql(text: str) -> tuple[str, dict[str, object]]:
    node = s.parse(text)
    assert node is not None
    p = Params()
    return to_sql(node, p), p.values


def err(text: str) -> s.SelectorError:
    with pytest.raises(s.SelectorError) as e:
        s.parse(text)
    return e.value


def test_calico_example() -> None:
    text, values = sql('dest_namespace = "shop" AND response_code =~ "5.*"')
    assert text == '(("dest_namespace" = $p0) AND prefix("response_code", $p1))'
    assert values == {"p0": "shop", "p1": "5"}


@pytest.mark.parametrize(("pattern", "want_sql", "value"), [
    ("5.*", 'prefix("url", $p0)', "5"),
    (".*/cart.*", 'contains("url", $p0)', "/cart"),
    (".*.json", 're("url", $p0)', "^(?s:.*.json)$"),
    (".*\\.json", 'suffix("url", $p0)', ".json"),
    ("GET", '("url" = $p0)', "GET"),
    ("50[0-9]", 're("url", $p0)', "^(?s:50[0-9])$"),
    ("a|b", 're("url", $p0)', "^(?s:a|b)$"),
])
def test_regex_literal_shapes_use_string_functions(pattern: str, want_sql: str, value: str) -> None:
    text, values = sql(f"url =~ {s.quote(pattern)}")
    assert text == want_sql and values == {"p0": value}


def test_precedence_not_and_or_and_parentheses() -> None:
    n = s.parse('method = GET OR NOT method = PUT AND count > 3')
    assert n == s.Or((s.Cmp("method", "=", "GET"),
                      s.And((s.Not(s.Cmp("method", "=", "PUT")), s.Cmp("count", ">", 3)))))
    n2 = s.parse('(method = GET OR method = PUT) AND count >= 3')
    assert isinstance(n2, s.And) and isinstance(n2.items[0], s.Or)


def test_in_not_in_and_synonyms() -> None:
    assert s.parse('method in ("GET", \'POST\')') == s.In("method", ("GET", "POST"), False)
    assert s.parse("response_code NOT IN (500, 503)") == s.In("response_code", ("500", "503"), True)
    assert s.parse('method == GET && !(url = "/x") || count != 1') == s.Or((
        s.And((s.Cmp("method", "=", "GET"), s.Not(s.Cmp("url", "=", "/x")))), s.Cmp("count", "!=", 1)))


def test_aliases_resolve_to_columns() -> None:
    assert s.parse('source_namespace = "a"') == s.Cmp("src_namespace", "=", "a")
    assert s.parse("dest_service_port_num = 80") == s.Cmp("dest_service_port", "=", 80)


def test_empty_selector_matches_all() -> None:
    assert s.parse("") is None
    assert s.parse("   ") is None
    assert s.parse(None) is None


@pytest.mark.parametrize("value", [
    "' OR 1=1 --", '"; DROP TABLE l7; --', "x') UNION SELECT * FROM system.tables --",
    "%(p0)s", "$p0", "?", "\\", "shop\x00", "%",
])
def test_sql_looking_values_stay_parameters(value: str) -> None:
    text, values = sql(f"url = {s.quote(value)}")
    assert text == '("url" = $p0)'
    assert values == {"p0": value}


def test_unicode_values_and_barewords() -> None:
    text, values = sql('url = "/straße/ü/日本" AND host = nöde-1')
    assert values == {"p0": "/straße/ü/日本", "p1": "nöde-1"}
    assert "straße" not in text


def test_quote_round_trips() -> None:
    for v in ['a"b', "a\\b", 'x\\"y', "plain", ""]:
        assert s.parse(f"url = {s.quote(v)}") == s.Cmp("url", "=", v)


@pytest.mark.parametrize(("text", "code", "pos", "field"), [
    ('dest_nmspace = "x"', "unknown_field", 0, "dest_nmspace"),
    ('method = GET AND bogus = 1', "unknown_field", 17, "bogus"),
    ("duration_hist = 1", "unknown_field", 0, "duration_hist"),
    ('count = "abc"', "bad_value", 8, "count"),
    ("count = -1", "bad_value", 8, "count"),
    ("count = 99999999999999999999", "bad_value", 8, "count"),
    ('url > "a"', "bad_value", 4, "url"),
    ("count =~ 5", "bad_value", 6, "count"),
    ('url =~ "("', "bad_value", 7, "url"),
    ('url =~ "(?=x)"', "bad_value", 7, "url"),
    ('method = "GET', "bad_selector", 9, None),
    ("method = ", "bad_selector", 9, None),
    ("(method = GET", "bad_selector", 13, None),
    ("method = GET)", "bad_selector", 12, None),
    ("method GET", "bad_selector", 7, None),
    ("method = GET AND", "bad_selector", 16, None),
    ("method IN GET", "bad_selector", 10, None),
    ("method IN (GET,", "bad_selector", 15, None),
    ("method NOT = GET", "bad_selector", 11, None),
    ("method = GET; DROP", "bad_selector", 12, None),
    ("AND = 1", "bad_selector", 0, None),
])
def test_errors_have_code_position_and_field(text: str, code: str, pos: int, field: str | None) -> None:
    e = err(text)
    assert (e.code, e.position, e.field) == (code, pos, field)
    assert f"position {pos}" in e.message


def test_limits() -> None:
    assert err("(" * 100 + "method = GET" + ")" * 100).code == "bad_selector"
    assert err("NOT " * 100 + "method = GET").code == "bad_selector"
    assert err("method = " + "x" * 30_000).code == "bad_selector"
    many = ", ".join(str(i) for i in range(1001))
    assert "more than" in err(f"count IN ({many})").message



def test_ipv6_literals_in_values() -> None:
    # an IPv6 destination's url starts with the bracketed literal Envoy logs as the domain
    assert sql('url = "[fd00:96::a]/api/items/1"') == (
        '("url" = $p0)', {"p0": "[fd00:96::a]/api/items/1"})
    assert sql(r'url =~ "\\[fd00:96::a\\]/api.*"') == (
        'prefix("url", $p0)', {"p0": "[fd00:96::a]/api"})
    assert s.parse(s.eq("url", "[fd00::1]:8080/x")) is not None
