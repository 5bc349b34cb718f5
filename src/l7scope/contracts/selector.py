"""The selector language (docs/api.md): its one owner, text -> tree, and tree -> text.

`parse()` turns a Calico-like selector into a small tree and checks every field name against the
allow-list (`contracts.fields.resolve`) and every value against its field's kind. Errors carry
the 0-based character position of the problem. `quote()`/`eq()` build selector text (the service
graph's node and edge selectors, `l7scope observe` flags). The server parses with it and renders
the tree as SQL in `server.store.selector_sql`; the CLI builds and checks selectors with it;
nothing else defines the grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from l7scope.contracts.fields import COLUMNS, resolve

MAX_SELECTOR_CHARS: Final = 20_000
MAX_DEPTH: Final = 64
MAX_IN_VALUES: Final = 1_000
MAX_INT: Final = 2**63 - 1

ErrorCode = Literal["bad_selector", "unknown_field", "bad_value"]


class SelectorError(ValueError):
    """A selector problem: `code`, a message, the character `position` and maybe the `field`."""

    def __init__(self, code: ErrorCode, message: str, position: int | None = None,
                 field: str | None = None) -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where}")
        self.code: ErrorCode = code
        self.message = f"{message}{where}"
        self.position = position
        self.field = field


# --- tree ---------------------------------------------------------------------------------

Value = str | int
CmpOp = Literal["=", "!=", "=~", "!~", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Cmp:
    field: str  # a column name (aliases resolved)
    op: CmpOp
    value: Value


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Cmp | In | And | Or | Not

# --- tokens -------------------------------------------------------------------------------

_OPS: Final = ("=~", "!~", "!=", "<=", ">=", "==", "&&", "||", "=", "<", ">", "!")
_KEYWORDS: Final = {"AND", "OR", "NOT", "IN"}


@dataclass(frozen=True)
class _Tok:
    kind: Literal["word", "str", "op", "punct", "end"]
    text: str  # the value (unescaped for strings; upper-cased not applied)
    pos: int


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c in "_.:/*-+@"


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            out.append(_Tok("punct", c, i))
            i += 1
        elif c in "\"'":
            start, i, buf = i, i + 1, []
            while True:
                if i >= n:
                    raise SelectorError("bad_selector", "unterminated string", start)
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise SelectorError("bad_selector", "unterminated string", start)
                    buf.append(text[i + 1])
                    i += 2
                elif ch == c:
                    i += 1
                    break
                else:
                    buf.append(ch)
                    i += 1
            out.append(_Tok("str", "".join(buf), start))
        elif _is_word_char(c):
            start = i
            while i < n and _is_word_char(text[i]):
                i += 1
            out.append(_Tok("word", text[start:i], start))
        else:
            for op in _OPS:
                if text.startswith(op, i):
                    out.append(_Tok("op", op, i))
                    i += len(op)
                    break
            else:
                raise SelectorError("bad_selector", f"unexpected character {c!r}", i)
    out.append(_Tok("end", "", n))
    return out


# --- parser -------------------------------------------------------------------------------


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def keyword(self, word: str) -> bool:
        t = self.peek()
        if t.kind == "word" and t.text.upper() == word:
            return True
        synonyms = {"AND": "&&", "OR": "||", "NOT": "!"}
        return t.kind == "op" and t.text == synonyms.get(word)

    def parse_or(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise SelectorError("bad_selector", f"nesting deeper than {MAX_DEPTH}", self.peek().pos)
        items = [self.parse_and(depth)]
        while self.keyword("OR"):
            self.take()
            items.append(self.parse_and(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self, depth: int) -> Node:
        items = [self.parse_not(depth)]
        while self.keyword("AND"):
            self.take()
            items.append(self.parse_not(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self, depth: int) -> Node:
        if self.keyword("NOT"):
            self.take()
            if depth + 1 > MAX_DEPTH:
                raise SelectorError("bad_selector", f"nesting deeper than {MAX_DEPTH}", self.peek().pos)
            return Not(self.parse_not(depth + 1))
        t = self.peek()
        if t.kind == "punct" and t.text == "(":
            self.take()
            node = self.parse_or(depth + 1)
            close = self.take()
            if not (close.kind == "punct" and close.text == ")"):
                raise SelectorError("bad_selector", f"expected ')' but found {_describe(close)}", close.pos)
            return node
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        ft = self.take()
        if ft.kind != "word" or ft.text.upper() in _KEYWORDS:
            raise SelectorError("bad_selector", f"expected a field name but found {_describe(ft)}", ft.pos)
        field = resolve(ft.text)
        if field is None:
            raise SelectorError("unknown_field", f"unknown field {ft.text!r}", ft.pos, ft.text)
        negated = False
        if self.keyword("NOT"):
            self.take()
            negated = True
            if not self.keyword("IN"):
                t = self.peek()
                raise SelectorError("bad_selector", f"expected IN after NOT but found {_describe(t)}", t.pos)
        if self.keyword("IN"):
            self.take()
            return self.parse_in(field, negated)
        opt = self.take()
        if opt.kind != "op" or opt.text in ("&&", "||", "!"):
            raise SelectorError("bad_selector", f"expected an operator after {ft.text!r} but found {_describe(opt)}", opt.pos)
        op: CmpOp = "=" if opt.text == "==" else opt.text  # type: ignore[assignment]
        vt = self.take()
        if op in ("=~", "!~"):
            if COLUMNS[field] != "text":
                raise SelectorError("bad_value", f"{op} needs a text field, {field!r} is numeric", opt.pos, field)
            value: Value = _regex(self.value_text(vt), vt.pos, field)
        elif op in ("<", "<=", ">", ">="):
            if COLUMNS[field] != "int":
                raise SelectorError("bad_value", f"{op} needs a numeric field, {field!r} is text", opt.pos, field)
            value = _coerce(field, self.value_text(vt), vt.pos)
        else:
            value = _coerce(field, self.value_text(vt), vt.pos)
        return Cmp(field, op, value)

    def parse_in(self, field: str, negated: bool) -> Node:
        t = self.take()
        if not (t.kind == "punct" and t.text == "("):
            raise SelectorError("bad_selector", f"expected '(' after IN but found {_describe(t)}", t.pos)
        values: list[Value] = []
        while True:
            vt = self.take()
            values.append(_coerce(field, self.value_text(vt), vt.pos))
            if len(values) > MAX_IN_VALUES:
                raise SelectorError("bad_selector", f"more than {MAX_IN_VALUES} values in IN", vt.pos)
            sep = self.take()
            if sep.kind == "punct" and sep.text == ")":
                return In(field, tuple(values), negated)
            if not (sep.kind == "punct" and sep.text == ","):
                raise SelectorError("bad_selector", f"expected ',' or ')' but found {_describe(sep)}", sep.pos)

    def value_text(self, t: _Tok) -> str:
        if t.kind == "str" or (t.kind == "word" and t.text.upper() not in _KEYWORDS):
            return t.text
        raise SelectorError("bad_selector", f"expected a value but found {_describe(t)}", t.pos)


def _describe(t: _Tok) -> str:
    if t.kind == "end":
        return "the end of the selector"
    if t.kind == "str":
        return f"string {t.text[:40]!r}"
    return repr(t.text[:40])


def _coerce(field: str, text: str, pos: int) -> Value:
    if COLUMNS[field] == "text":
        return text
    if not re.fullmatch(r"[0-9]{1,19}", text.strip()) or int(text) > MAX_INT:
        raise SelectorError("bad_value", f"{field!r} needs a non-negative integer, got {text[:40]!r}", pos, field)
    return int(text)


_RE2_UNSUPPORTED: Final = re.compile(r"\(\?<?[=!]|\\[1-9]")


def _regex(pattern: str, pos: int, field: str) -> str:
    if _RE2_UNSUPPORTED.search(pattern):
        raise SelectorError("bad_value", "lookaround and backreferences are not supported in =~", pos, field)
    try:
        re.compile(pattern)
    except re.error as e:
        raise SelectorError("bad_value", f"bad regular expression: {e}", pos, field) from None
    return pattern


def parse(text: str | None) -> Node | None:
    """Parse a selector; None for an empty one. Raises SelectorError."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_SELECTOR_CHARS:
        raise SelectorError("bad_selector", f"selector longer than {MAX_SELECTOR_CHARS} characters", MAX_SELECTOR_CHARS)
    p = _Parser(_tokenize(text))
    node = p.parse_or(0)
    t = p.peek()
    if t.kind != "end":
        raise SelectorError("bad_selector", f"expected AND, OR or the end but found {_describe(t)}", t.pos)
    return node


# --- building selectors (the service graph's node/edge selectors, the CLI's flags) ---------


def quote(value: str) -> str:
    """A selector string literal for `value`."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def eq(field: str, value: str | int) -> str:
    return f"{field} = {quote(value) if isinstance(value, str) else value}"
