"""K3Cloud ``FilterString`` and ``OrderString``: a tokenizer, a recursive-descent parser and an
evaluator over rows. Never ``eval``.

The server pastes ``FilterString`` into a SQL Server ``WHERE`` clause after translating field
keys to columns; the subset understood here::

    expr      := and_expr (OR and_expr)*
    and_expr  := not_expr (AND not_expr)*
    not_expr  := NOT not_expr | '(' expr ')' | predicate
    predicate := operand ( cmp operand
                         | [NOT] LIKE string [ESCAPE string]
                         | [NOT] IN '(' literal (',' literal)* ')'
                         | [NOT] BETWEEN operand AND operand
                         | IS [NOT] NULL )
    cmp       := '=' | '<>' | '!=' | '>' | '>=' | '<' | '<='
    operand   := field | string | ['-'] number

Strings are single-quoted with ``''`` for a quote (``N'...'`` too). Comparisons follow SQL
Server's default collation (``Chinese_PRC_CI_AS``): case-insensitive, trailing spaces ignored by
``=`` and ordering; ``LIKE`` knows ``%``, ``_``, ``[abc]``, ``[a-z]``, ``[^a]`` and ``ESCAPE``.
Anything that compares with NULL is unknown (three-valued logic), so ``NOT`` of it is unknown too.

Literals take the type of the field they meet: a date string becomes a datetime, a numeric
string a number. A literal that cannot, or a syntax error, raises :class:`FilterSyntaxError`
(the simulator answers MsgCode 4 ``GetRealExpress error``); a field the form lacks raises
whatever the caller's ``kind_of`` raises (MsgCode 9).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# Field kinds the evaluator understands (the simulator maps every field to one of them).
TEXT, DATE, NUMBER, BOOL, ID = "text", "date", "number", "bool", "id"


class FilterSyntaxError(ValueError):
    """The filter or order string is not valid (→ MsgCode 4, ``GetRealExpress error``)."""


# --- tokens ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # "field", "keyword", "string", "number", "op", "(", ")", ",", "end"
    text: str
    value: Any
    at: int


KEYWORDS = {"and", "or", "not", "like", "in", "is", "null", "between", "escape", "asc", "desc"}
_OPS = ("<>", "!=", ">=", "<=", "=", ">", "<", "-")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'" or (ch in "Nn" and i + 1 < n and text[i + 1] == "'"):
            start = i
            i += 2 if ch != "'" else 1
            parts = []
            while True:
                end = text.find("'", i)
                if end < 0:
                    raise FilterSyntaxError(f"unterminated string starting at position {start}")
                parts.append(text[i:end])
                if end + 1 < n and text[end + 1] == "'":
                    parts.append("'")
                    i = end + 2
                    continue
                i = end + 1
                break
            tokens.append(Token("string", text[start:i], "".join(parts), start))
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            match = _NUMBER.match(text, i)
            assert match is not None
            tokens.append(Token("number", match.group(), Decimal(match.group()), i))
            i = match.end()
            if i < n and (text[i].isalnum() or text[i] == "_"):
                raise FilterSyntaxError(f"unexpected {text[i]!r} after number at position {i}")
            continue
        if ch.isalpha() or ch == "_":
            match = _IDENT.match(text, i)
            assert match is not None
            word = match.group()
            kind = "keyword" if word.lower() in KEYWORDS else "field"
            tokens.append(Token(kind, word, word.lower() if kind == "keyword" else word, i))
            i = match.end()
            continue
        if ch in "(),":
            tokens.append(Token(ch, ch, ch, i))
            i += 1
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(Token("op", op, "<>" if op == "!=" else op, i))
                i += len(op)
                break
        else:
            raise FilterSyntaxError(f"unexpected character {ch!r} at position {i}")
    tokens.append(Token("end", "", None, n))
    return tokens


# --- syntax tree ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any  # str or Decimal


@dataclass(frozen=True)
class Compare:
    op: str
    left: Field | Literal
    right: Field | Literal


@dataclass(frozen=True)
class Like:
    operand: Field | Literal
    pattern: str
    escape: str | None
    negate: bool


@dataclass(frozen=True)
class In:
    operand: Field | Literal
    values: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True)
class Between:
    operand: Field | Literal
    low: Field | Literal
    high: Field | Literal
    negate: bool


@dataclass(frozen=True)
class IsNull:
    operand: Field | Literal
    negate: bool


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class And:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at_keyword(self, *words: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value in words

    def expect_keyword(self, word: str) -> None:
        if not self.at_keyword(word):
            self.fail(f"expected {word.upper()}")
        self.next()

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            self.fail(f"expected {kind!r}")
        return self.next()

    def fail(self, what: str) -> None:
        found = self.tok.text or "end of text"
        raise FilterSyntaxError(f"{what} at position {self.tok.at}, found {found!r}")

    # grammar

    def parse(self) -> Any:
        node = self.or_expr()
        if self.tok.kind != "end":
            self.fail("expected AND, OR or the end")
        return node

    def or_expr(self) -> Any:
        items = [self.and_expr()]
        while self.at_keyword("or"):
            self.next()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Any:
        items = [self.not_expr()]
        while self.at_keyword("and"):
            self.next()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Any:
        if self.at_keyword("not"):
            self.next()
            return Not(self.not_expr())
        if self.tok.kind == "(":
            self.next()
            node = self.or_expr()
            self.expect(")")
            return node
        return self.predicate()

    def operand(self) -> Field | Literal:
        tok = self.tok
        if tok.kind == "field":
            self.next()
            return Field(tok.value)
        if tok.kind in ("string", "number"):
            self.next()
            return Literal(tok.value)
        if tok.kind == "op" and tok.value == "-":
            self.next()
            number = self.expect("number")
            return Literal(-number.value)
        self.fail("expected a field, a quoted string or a number")
        raise AssertionError  # unreachable

    def literal(self) -> Literal:
        operand = self.operand()
        if not isinstance(operand, Literal):
            self.fail("expected a literal")
        return operand  # type: ignore[return-value]

    def predicate(self) -> Any:
        left = self.operand()
        tok = self.tok
        if tok.kind == "op" and tok.value != "-":
            self.next()
            return Compare(tok.value, left, self.operand())
        if self.at_keyword("is"):
            self.next()
            negate = self.at_keyword("not")
            if negate:
                self.next()
            self.expect_keyword("null")
            return IsNull(left, negate)
        negate = self.at_keyword("not")
        if negate:
            self.next()
        if self.at_keyword("like"):
            self.next()
            pattern = self.expect("string").value
            escape = None
            if self.at_keyword("escape"):
                self.next()
                escape = self.expect("string").value
                if len(escape) != 1:
                    raise FilterSyntaxError(f"ESCAPE needs exactly one character, got {escape!r}")
            return Like(left, pattern, escape, negate)
        if self.at_keyword("in"):
            self.next()
            self.expect("(")
            values = [self.literal()]
            while self.tok.kind == ",":
                self.next()
                values.append(self.literal())
            self.expect(")")
            return In(left, tuple(values), negate)
        if self.at_keyword("between"):
            self.next()
            low = self.operand()
            self.expect_keyword("and")
            return Between(left, low, self.operand(), negate)
        self.fail("expected a comparison, LIKE, IN, BETWEEN or IS NULL")
        raise AssertionError  # unreachable


def parse_filter(text: str | None) -> Any:
    """The syntax tree of a FilterString, or ``None`` for an empty one."""
    if text is None or not str(text).strip():
        return None
    return _Parser(str(text)).parse()


def fields_of(node: Any) -> list[str]:
    """Every field name the tree mentions, in order of appearance."""
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, Field):
            found.append(item.name)
        elif isinstance(item, (And, Or)):
            for sub in item.items:
                walk(sub)
        elif isinstance(item, Not):
            walk(item.item)
        elif isinstance(item, Compare):
            walk(item.left)
            walk(item.right)
        elif isinstance(item, (Like, In, IsNull)):
            walk(item.operand)
        elif isinstance(item, Between):
            walk(item.operand)
            walk(item.low)
            walk(item.high)

    walk(node)
    return found


def parse_order(text: str | None) -> list[tuple[str, bool]]:
    """``"FDate DESC, FID"`` → ``[("FDate", True), ("FID", False)]`` (True = descending)."""
    if text is None or not str(text).strip():
        return []
    tokens = tokenize(str(text))
    keys: list[tuple[str, bool]] = []
    pos = 0
    while True:
        tok = tokens[pos]
        if tok.kind != "field":
            raise FilterSyntaxError(f"OrderString: expected a field at position {tok.at}, found {tok.text or 'end'!r}")
        pos += 1
        descending = False
        if tokens[pos].kind == "keyword" and tokens[pos].value in ("asc", "desc"):
            descending = tokens[pos].value == "desc"
            pos += 1
        keys.append((tok.value, descending))
        if tokens[pos].kind == "end":
            return keys
        if tokens[pos].kind != ",":
            raise FilterSyntaxError(f"OrderString: expected ',' at position {tokens[pos].at}, found {tokens[pos].text!r}")
        pos += 1


# --- values ---------------------------------------------------------------------------------

_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f",
                 "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f",
                 "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y%m%d")


def parse_datetime(text: str) -> datetime:
    """A SQL Server-style date literal as a naive datetime; ValueError if it is not one."""
    text = text.strip()
    match = re.fullmatch(r"(.*?\.)(\d{7,})", text)  # .NET prints up to 7 fraction digits
    if match:
        text = match.group(1) + match.group(2)[:6]
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a date")


def coerce(value: Any, kind: str) -> Any:
    """A literal (str or Decimal) as a value of ``kind``; FilterSyntaxError if it cannot be."""
    try:
        if kind == DATE:
            return parse_datetime(str(value))
        if kind in (NUMBER, ID):
            return Decimal(str(value).strip())
        if kind == BOOL:
            text = str(value).strip().lower()
            if text in ("1", "true"):
                return True
            if text in ("0", "false"):
                return False
            raise ValueError(text)
    except (ValueError, InvalidOperation):
        raise FilterSyntaxError(f"cannot convert {value!r} to a {kind}") from None
    return value if isinstance(value, str) else format(value, "f")


def _norm(value: Any) -> Any:
    """The comparable form of a value under a case-insensitive, pad-insensitive collation."""
    if isinstance(value, str):
        return value.rstrip(" ").casefold()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    return value


def _compare(op: str, left: Any, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    a, b = _norm(left), _norm(right)
    if type(a) is not type(b):  # e.g. a text field against another field's number
        a, b = str(a), str(b)
    if op == "=":
        return a == b
    if op == "<>":
        return a != b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b


def like_regex(pattern: str, escape: str | None = None) -> re.Pattern[str]:
    """SQL Server LIKE as a regular expression (case-insensitive, whole value)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if escape is not None and ch == escape and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("]", "^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))  # an unclosed bracket is a plain character
            else:
                body = pattern[i + 1:end]
                negate = body.startswith("^") and len(body) > 1
                if negate:
                    body = body[1:]
                parts = []
                j = 0
                while j < len(body):
                    if j + 2 < len(body) and body[j + 1] == "-":
                        parts.append(re.escape(body[j]) + "-" + re.escape(body[j + 2]))
                        j += 3
                    else:
                        parts.append(re.escape(body[j]))
                        j += 1
                out.append(("[^" if negate else "[") + "".join(parts) + "]")
                i = end + 1
                continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def like_escape(text: str) -> str:
    """Quote ``text`` so ``LIKE`` matches it literally (SQL Server brackets ``[``, ``%``, ``_``)."""
    return "".join(f"[{ch}]" if ch in "[%_" else ch for ch in text)


def quote(text: str) -> str:
    """A string literal: ``O'Neil`` → ``'O''Neil'``."""
    return "'" + text.replace("'", "''") + "'"


# --- evaluation -----------------------------------------------------------------------------

Getter = Callable[[Any], Any]  # row -> value


def compile_filter(
    node: Any, kind_of: Callable[[str], str], getter: Callable[[str], Getter],
) -> Callable[[Any], bool]:
    """A predicate over rows. ``kind_of(name)`` gives a field's kind (raising for unknown
    fields); ``getter(name)`` a function reading the field from a row. Literals are converted
    here, once, so a bad literal fails even when there are no rows."""
    if node is None:
        return lambda row: True

    def operand(item: Field | Literal, kind: str | None) -> Getter:
        if isinstance(item, Field):
            return getter(item.name)
        value = coerce(item.value, kind) if kind is not None else item.value
        return lambda row: value

    def kind(item: Field | Literal) -> str | None:
        return kind_of(item.name) if isinstance(item, Field) else None

    def build(item: Any) -> Callable[[Any], bool | None]:
        if isinstance(item, Or):
            parts = [build(sub) for sub in item.items]

            def either(row: Any) -> bool | None:
                results = [part(row) for part in parts]
                return True if True in results else (None if None in results else False)
            return either
        if isinstance(item, And):
            parts = [build(sub) for sub in item.items]

            def both(row: Any) -> bool | None:
                results = [part(row) for part in parts]
                return False if False in results else (None if None in results else True)
            return both
        if isinstance(item, Not):
            inner = build(item.item)

            def negated(row: Any) -> bool | None:
                result = inner(row)
                return None if result is None else not result
            return negated
        if isinstance(item, Compare):
            lk, rk = kind(item.left), kind(item.right)
            left, right = operand(item.left, rk), operand(item.right, lk)
            op = item.op
            return lambda row: _compare(op, left(row), right(row))
        if isinstance(item, Like):
            value = operand(item.operand, None)
            regex = like_regex(item.pattern, item.escape)
            negate = item.negate

            def like(row: Any) -> bool | None:
                got = value(row)
                if got is None:
                    return None
                text = got if isinstance(got, str) else str(got)
                return (regex.fullmatch(text) is not None) != negate
            return like
        if isinstance(item, In):
            k = kind(item.operand)
            value = operand(item.operand, None)
            options = [coerce(v.value, k) if k else v.value for v in item.values]
            negate = item.negate

            def member(row: Any) -> bool | None:
                got = value(row)
                if got is None:
                    return None
                return any(_compare("=", got, option) for option in options) != negate
            return member
        if isinstance(item, Between):
            k = kind(item.operand)
            value = operand(item.operand, None)
            low, high = operand(item.low, k), operand(item.high, k)
            negate = item.negate

            def between(row: Any) -> bool | None:
                got = value(row)
                a, b = _compare(">=", got, low(row)), _compare("<=", got, high(row))
                if a is None or b is None:
                    return None
                return (a and b) != negate
            return between
        if isinstance(item, IsNull):
            value = operand(item.operand, None)
            negate = item.negate
            return lambda row: (value(row) is None) != negate
        raise FilterSyntaxError(f"cannot evaluate {item!r}")

    predicate = build(node)
    return lambda row: predicate(row) is True


def sort_key(value: Any) -> tuple[int, Any]:
    """Order like SQL Server: NULL first, strings case-insensitively."""
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (2, value.rstrip(" ").casefold())
    if isinstance(value, datetime):
        return (1, value)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float, Decimal)):
        return (1, Decimal(str(value)))
    return (3, str(value))
