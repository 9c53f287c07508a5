"""The OData query subset of the SAP B1 Service Layer: ``$filter``, ``$select``, ``$orderby``, keys.

``$filter`` is tokenized and parsed (recursive descent) into a predicate over a record accessor;
nothing is ever evaluated as Python. Per dialect (``vendors/sap_b1.md`` §2.5):

* operators ``eq ne gt ge lt le``, ``and or not``, parentheses;
* ``startswith(P,'x')`` and ``endswith(P,'x')`` on both; ``contains(P,'x')`` on v2 (OData v4),
  ``substringof('x',P)`` on v1 (OData v3);
* string literals ``'...'`` with ``''`` for a quote; numbers; ``null``, ``true``, ``false``;
* dates: a string literal compared with a date property (``'2014-04-23'``, ``'20140423'``,
  ``'2014-04-23T12:21:21'``, time ignored); ``datetime'2014-04-23'`` on v1; a bare
  ``2014-04-23`` / ``2014-04-23T10:00:00Z`` on v2;
* times: ``'18:38:00'`` or ``'1838'`` against a time property (``UpdateTime``);
* enums by name or value (``CardType eq 'cSupplier'`` or ``'S'``).

Anything else is a :class:`QueryError` (400, code 201 "Not supported query string" on SAP).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sandbox.sap_b1_entities import DATE_FIELDS, ENUM_ALIASES, TIME_FIELDS

Dialect = Literal["v1", "v2"]
Getter = Callable[[str], Any]
Predicate = Callable[[Getter], bool]

NOT_SUPPORTED = "Not supported query string"


class QueryError(Exception):
    """A query option the Service Layer would refuse: 400 with ``code``."""

    def __init__(self, message: str, code: int = 201) -> None:
        super().__init__(message)
        self.code = code


def quote(text: str) -> str:
    """A string literal for ``$filter`` or a key: ``O'Neil`` → ``'O''Neil'``."""
    return "'" + text.replace("'", "''") + "'"


# --- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str      # ( ) , STRING NUMBER DATE NAME KEYWORD EOF
    value: Any
    pos: int


KEYWORDS = frozenset({"eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "null", "true", "false"})
COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?[mMdDfFlL]?")
_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _read_string(text: str, start: int) -> tuple[str, int]:
    """``text[start]`` is the opening quote; returns (value, index after the closing quote)."""
    out = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise QueryError(f"{NOT_SUPPORTED}  [unterminated string literal at {start}]")


def tokenize(text: str, dialect: Dialect) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in " \t\r\n":
            i += 1
        elif char in "(),":
            tokens.append(Token(char, char, i))
            i += 1
        elif char == "'":
            value, end = _read_string(text, i)
            tokens.append(Token("STRING", value, i))
            i = end
        elif char.isdigit() or (char == "-" and i + 1 < len(text) and text[i + 1].isdigit()):
            bare = _BARE_DATE.match(text, i) if char.isdigit() else None
            if bare:
                if dialect != "v2":
                    raise QueryError(f"{NOT_SUPPORTED}  [bare date literal at {i}: use datetime'...' on /b1s/v1]")
                tokens.append(Token("DATE", _parse_date(bare.group(0)), i))
                i = bare.end()
                continue
            number = _NUMBER.match(text, i)
            assert number is not None
            digits = number.group(0).rstrip("mMdDfFlL")
            tokens.append(Token("NUMBER", Decimal(digits), i))
            i = number.end()
        elif char.isalpha() or char == "_":
            name = _NAME.match(text, i)
            assert name is not None
            word, end = name.group(0), name.end()
            if end < len(text) and text[end] == "'" and word in ("datetime", "datetimeoffset"):
                if dialect != "v1":
                    raise QueryError(f"{NOT_SUPPORTED}  [{word}'...' literal at {i} is OData v3: use a bare date on /b1s/v2]")
                value, end = _read_string(text, end)
                tokens.append(Token("DATE", _parse_date(value), i))
            elif end < len(text) and text[end] == "'":
                raise QueryError(f"{NOT_SUPPORTED}  [typed literal {word}'...' at {i}]")
            elif word in KEYWORDS:
                tokens.append(Token("KEYWORD", word, i))
            elif end < len(text) and text[end] == "/":
                raise QueryError(f"{NOT_SUPPORTED}  [property path at {i}]")
            else:
                tokens.append(Token("NAME", word, i))
            i = end
        else:
            raise QueryError(f"{NOT_SUPPORTED}  [unexpected character {char!r} at {i}]")
    tokens.append(Token("EOF", None, len(text)))
    return tokens


# --- literals ---------------------------------------------------------------------------------

_DATE_FORMS = (
    re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


def _parse_date(text: str) -> date:
    for pattern in _DATE_FORMS:
        match = pattern.match(text.strip())
        if match:
            try:
                return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            except ValueError:
                break
    raise QueryError(f"{NOT_SUPPORTED}  [not a date: {text!r}]")


def parse_date_text(text: str) -> date:
    """A date as the Service Layer takes it in bodies and filters (time part ignored)."""
    return _parse_date(text)


def _parse_time(text: str) -> int:
    """Seconds of the day from ``18:38:00``, ``18:38`` or ``1838`` (date part ignored)."""
    value = text.strip()
    if "T" in value:
        value = value.split("T", 1)[1]
    value = value.rstrip("Z")
    match = re.match(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?", value) or re.match(r"^(\d{2})(\d{2})(\d{2})?$", value)
    if not match:
        raise QueryError(f"{NOT_SUPPORTED}  [not a time: {text!r}]")
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise QueryError(f"{NOT_SUPPORTED}  [not a time: {text!r}]")
    return hours * 3600 + minutes * 60 + seconds


# --- AST --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Literal_:
    kind: str   # STRING NUMBER DATE NULL BOOL
    value: Any


Operand = Field | Literal_


class _Parser:
    def __init__(self, tokens: list[Token], dialect: Dialect, known: Callable[[str], bool],
                 case_insensitive: bool) -> None:
        self.tokens = tokens
        self.pos = 0
        self.dialect = dialect
        self.known = known
        self.fold = case_insensitive

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, kind: str) -> Token:
        if self.token.kind != kind:
            raise self.error(f"expected {kind!r}")
        return self.take()

    def error(self, what: str) -> QueryError:
        token = self.token
        seen = "end of $filter" if token.kind == "EOF" else repr(token.value)
        return QueryError(f"{NOT_SUPPORTED}  [$filter: {what}, found {seen} at {token.pos}]")

    def keyword(self, word: str) -> bool:
        if self.token.kind == "KEYWORD" and self.token.value == word:
            self.pos += 1
            return True
        return False

    # grammar: or_expr := and_expr ("or" and_expr)*; and_expr := unary ("and" unary)*;
    # unary := "not" unary | comparison; comparison := operand [cmp operand]
    def parse(self) -> Predicate:
        predicate = self.or_expr()
        if self.token.kind != "EOF":
            raise self.error("expected and/or or the end")
        return predicate

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.keyword("or"):
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        predicate = _hinted(lambda get: any(p(get) for p in parts))
        hints = [getattr(p, "equals", None) for p in parts]
        if all(hints) and len({field for field, _ in hints}) == 1:
            predicate.equals = (hints[0][0], frozenset().union(*(values for _, values in hints)))
        return predicate

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while self.keyword("and"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        predicate = _hinted(lambda get: all(p(get) for p in parts))
        hint = next((p.equals for p in parts if getattr(p, "equals", None)), None)
        if hint is not None:  # a conjunction matches no more than any of its parts
            predicate.equals = hint
        return predicate

    def unary(self) -> Predicate:
        if self.keyword("not"):
            inner = self.unary()
            return lambda get: not inner(get)
        return self.comparison()

    def comparison(self) -> Predicate:
        if self.token.kind == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        if self.token.kind == "NAME" and self.tokens[self.pos + 1].kind == "(":
            return self.function()
        left = self.operand()
        if self.token.kind == "KEYWORD" and self.token.value in COMPARISONS:
            op = self.take().value
            right = self.operand()
            return self.compare(op, left, right)
        if isinstance(left, Literal_) and left.kind == "BOOL":
            value = left.value
            return lambda get: value
        raise self.error("expected a comparison operator")

    def operand(self) -> Operand:
        token = self.token
        if token.kind == "NAME":
            self.take()
            if not self.known(token.value):
                raise QueryError(f"Property '{token.value}' is invalid", code=-1000)
            return Field(token.value)
        if token.kind in ("STRING", "NUMBER", "DATE"):
            self.take()
            return Literal_(token.kind, token.value)
        if token.kind == "KEYWORD" and token.value == "null":
            self.take()
            return Literal_("NULL", None)
        if token.kind == "KEYWORD" and token.value in ("true", "false"):
            self.take()
            return Literal_("BOOL", token.value == "true")
        raise self.error("expected a property or a literal")

    def function(self) -> Predicate:
        name = self.take().value
        allowed = {"startswith", "endswith", "contains" if self.dialect == "v2" else "substringof"}
        if name not in allowed:
            raise QueryError(f"{NOT_SUPPORTED}  [function {name}() on /b1s/{self.dialect}]")
        self.expect("(")
        first = self.operand()
        self.expect(",")
        second = self.operand()
        self.expect(")")
        if name == "substringof":  # substringof('needle', Property)
            first, second = second, first
        if not isinstance(first, Field) or not isinstance(second, Literal_) or second.kind != "STRING":
            raise QueryError(f"{NOT_SUPPORTED}  [{name}() needs a property and a string literal]")
        field_name, needle = first.name, second.value
        fold = self.fold
        if fold:
            needle = needle.lower()
        test: Callable[[str], bool] = {
            "startswith": lambda s: s.startswith(needle),
            "endswith": lambda s: s.endswith(needle),
            "contains": lambda s: needle in s,
            "substringof": lambda s: needle in s,
        }[name]

        def predicate(get: Getter) -> bool:
            value = get(field_name)
            if value is None:
                return False
            text = str(value)
            return test(text.lower() if fold else text)
        return predicate

    def compare(self, op: str, left: Operand, right: Operand) -> Predicate:
        if isinstance(left, Literal_) and isinstance(right, Field):
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        test = _OPS[op]
        fold = self.fold
        if isinstance(left, Literal_):  # literal against literal
            a, b = left.value, right.value
            return lambda get: _null_safe(op, a, b, test)
        field_name = left.name
        if isinstance(right, Field):
            other = right.name
            return lambda get: _null_safe(op, _plain(get(field_name), fold), _plain(get(other), fold), test)
        literal = right
        if literal.kind == "NULL":
            return (lambda get: get(field_name) is None) if op == "eq" else (
                (lambda get: get(field_name) is not None) if op == "ne" else (lambda get: False))
        coerce = _coercer(field_name, literal, fold)
        cache: dict[str, Any] = {}

        @_hinted
        def predicate(get: Getter) -> bool:
            value = get(field_name)
            if value is None:
                return op == "ne"
            kind = type(value).__name__
            if kind not in cache:
                cache[kind] = coerce(value)
            if field_name in TIME_FIELDS and isinstance(value, str):
                return test(_parse_time(value), cache[kind])
            return test(_plain(value, fold), cache[kind])
        if op == "eq" and not fold and literal.kind == "STRING":
            predicate.equals = (field_name, frozenset({literal.value}))
        return predicate


def _hinted(fn: Callable[[Getter], bool]) -> Any:
    """A predicate that may carry ``equals = (field, values)``: every record it matches has
    ``field`` in ``values``. The query uses it to skip records by key (an ``ItemCode eq 'A' or
    ItemCode eq 'B'`` lookup must not scan 20,000 items); the predicate still decides."""
    fn.equals = None  # type: ignore[attr-defined]
    return fn


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def _null_safe(op: str, a: Any, b: Any, test: Callable[[Any, Any], bool]) -> bool:
    if a is None or b is None:
        return (a is None) == (b is None) if op == "eq" else ((a is None) != (b is None) if op == "ne" else False)
    try:
        return test(a, b)
    except TypeError:
        raise QueryError(f"{NOT_SUPPORTED}  [cannot compare {a!r} with {b!r}]") from None


def _plain(value: Any, fold: bool) -> Any:
    """A record value in comparable form: numbers as Decimal, times as seconds, folded text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str) and fold:
        return value.lower()
    return value


def _coercer(field_name: str, literal: Literal_, fold: bool) -> Callable[[Any], Any]:
    """Given the field's runtime value, turn the literal into the same type (once per type)."""
    def coerce(sample: Any) -> Any:
        kind, value = literal.kind, literal.value
        if isinstance(sample, (date, datetime)) or field_name in DATE_FIELDS:
            if kind == "DATE":
                return value
            if kind == "STRING":
                return _parse_date(value)
            raise QueryError(f"{NOT_SUPPORTED}  [{field_name} is a date; got {value!r}]")
        if field_name in TIME_FIELDS:
            if kind in ("STRING", "NUMBER"):
                return _parse_time(str(value))
            raise QueryError(f"{NOT_SUPPORTED}  [{field_name} is a time; got {value!r}]")
        if isinstance(sample, bool):
            if kind == "BOOL":
                return value
            raise QueryError(f"{NOT_SUPPORTED}  [{field_name} is a boolean; got {value!r}]")
        if isinstance(sample, (int, float, Decimal)):
            if kind == "NUMBER":
                return value
            if kind == "STRING":
                try:
                    return Decimal(value.strip())
                except InvalidOperation:
                    pass
            raise QueryError(f"{NOT_SUPPORTED}  [{field_name} is a number; got {value!r}]")
        if isinstance(sample, str):
            if kind != "STRING":
                raise QueryError(f"{NOT_SUPPORTED}  [{field_name} is a string; use a quoted literal]")
            text = ENUM_ALIASES.get(field_name, {}).get(value, value)
            return text.lower() if fold else text
        raise QueryError(f"{NOT_SUPPORTED}  [{field_name} cannot be filtered]")
    return coerce


def parse_filter(text: str, dialect: Dialect, *, known: Callable[[str], bool] = lambda name: True,
                 case_insensitive: bool = False) -> Predicate:
    """Compile ``$filter`` text to ``predicate(get)``; ``get(name)`` returns a record's value."""
    tokens = tokenize(text, dialect)
    if tokens[0].kind == "EOF":
        raise QueryError(f"{NOT_SUPPORTED}  [$filter is empty]")
    return _Parser(tokens, dialect, known, case_insensitive).parse()


# --- $select, $orderby, $top, $skip -----------------------------------------------------------


def parse_select(text: str, known: Callable[[str], bool]) -> list[str] | None:
    names = [part.strip() for part in text.split(",")]
    if "*" in names:
        return None
    for name in names:
        if not _NAME.fullmatch(name):
            raise QueryError(f"{NOT_SUPPORTED}  [$select item {name!r}]")
        if not known(name):
            raise QueryError(f"Property '{name}' is invalid", code=-1000)
    return names


def parse_orderby(text: str, known: Callable[[str], bool]) -> list[tuple[str, bool]]:
    """``"DocDate desc, DocEntry"`` → ``[("DocDate", True), ("DocEntry", False)]`` (descending?)."""
    keys = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise QueryError(f"{NOT_SUPPORTED}  [$orderby item {part.strip()!r}]")
        if not _NAME.fullmatch(words[0]):
            raise QueryError(f"{NOT_SUPPORTED}  [$orderby item {part.strip()!r}]")
        if not known(words[0]):
            raise QueryError(f"Property '{words[0]}' is invalid", code=-1000)
        keys.append((words[0], len(words) == 2 and words[1] == "desc"))
    return keys


def sort_key(value: Any) -> tuple[int, Any]:
    """Nulls first, then values in their natural order (numbers as Decimal)."""
    if value is None:
        return (0, 0)
    return (1, _plain(value, False))


def parse_count(name: str, text: str) -> int:
    if not text.isdigit():
        raise QueryError(f"{NOT_SUPPORTED}  [{name}={text!r}: expected a non-negative integer]")
    return int(text)


# --- resource paths and keys ------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """``Items('A')/$count`` → entity_set "Items", key "A", rest "$count"."""

    entity_set: str
    key: Any = None            # None: the collection; a value or a {name: value} mapping
    has_key: bool = False
    rest: str | None = None    # "$count", "Cancel", "Close", ...


def _key_value(text: str) -> Any:
    text = text.strip()
    if text.startswith("'"):
        value, end = _read_string(text, 0)
        if end != len(text):
            raise QueryError(f"{NOT_SUPPORTED}  [key {text!r}]")
        return value
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return Decimal(text)
    raise QueryError(f"{NOT_SUPPORTED}  [key {text!r}]")


def parse_key(text: str) -> Any:
    """The inside of ``(...)``: ``'A001'``, ``22``, ``DocEntry=22``, ``Code='AK',Type=-3``."""
    parts: list[str] = []
    depth_start, i, quoted = 0, 0, False
    while i < len(text):
        if text[i] == "'":
            quoted = not quoted
        elif text[i] == "," and not quoted:
            parts.append(text[depth_start:i])
            depth_start = i + 1
        i += 1
    parts.append(text[depth_start:])
    if len(parts) == 1 and not re.match(r"^\s*[A-Za-z_]\w*\s*=", parts[0]):
        return _key_value(parts[0])
    named = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep or not _NAME.fullmatch(name.strip()):
            raise QueryError(f"{NOT_SUPPORTED}  [key {text!r}]")
        named[name.strip()] = _key_value(value)
    return named


def parse_resource(path: str) -> Resource:
    """A path below ``/b1s/vN/``. Raises :class:`QueryError` on a malformed key."""
    match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)", path)
    if not match:
        raise QueryError(f"Resource not found for the segment '{path}'", code=-1000)
    name, i = match.group(1), match.end()
    key, has_key = None, False
    if i < len(path) and path[i] == "(":
        j, quoted = i + 1, False
        while j < len(path):
            if path[j] == "'":
                quoted = not quoted
            elif path[j] == ")" and not quoted:
                break
            j += 1
        if j >= len(path):
            raise QueryError(f"{NOT_SUPPORTED}  [unclosed key in {path!r}]")
        key, has_key = parse_key(path[i + 1:j]), True
        i = j + 1
    rest = None
    if i < len(path):
        if path[i] != "/" or i + 1 >= len(path):
            raise QueryError(f"Resource not found for the segment '{path}'", code=-1000)
        rest = path[i + 1:]
    return Resource(name, key, has_key, rest)


def known_in(*templates: Mapping[str, Any], extra: Callable[[str], bool] = lambda name: False) -> Callable[[str], bool]:
    names = set().union(*templates)
    return lambda name: name in names or extra(name)
