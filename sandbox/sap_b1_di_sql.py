"""The small, read-only SQL subset the simulated DI Server's ``ExecuteSQL`` accepts.

A real tokenizer and recursive-descent parser, never ``eval``; anything outside this grammar is
refused with :class:`SqlError` (the DI Server answers it as a SOAP Fault)::

    query     := SELECT [TOP n] columns FROM table [WHERE expr] [ORDER BY order {, order}]
                 [OFFSET n ROWS [FETCH (NEXT|FIRST) n ROWS ONLY]]
    columns   := '*' | column {, column}
    expr      := term {OR term}
    term      := factor {AND factor}
    factor    := NOT factor | '(' expr ')' | predicate
    predicate := column (= | <> | != | < | <= | > | >=) literal
               | column [NOT] IN '(' literal {, literal} ')'
               | column IS [NOT] NULL
               | column [NOT] LIKE 'text'          (% and _ wildcards)
    literal   := 'text' (quote doubled inside) | N'text' | number | NULL
    order     := column [ASC | DESC]

Identifiers may be bare, ``"quoted"`` or ``[bracketed]``. One statement only: a ``;``, a comment
(``--``, ``/*``) or any other keyword (``UPDATE``, ``JOIN``, ``UNION``…) is a syntax error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["SqlError", "Query", "Compare", "InList", "IsNull", "Like", "And", "Or", "Not", "parse_sql"]


class SqlError(ValueError):
    """The statement is not in the accepted subset (or names something unknown)."""


@dataclass(frozen=True)
class Compare:
    column: str
    op: str            # = <> < <= > >=
    value: Any         # str | Decimal | None


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Any, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False


@dataclass(frozen=True)
class Like:
    column: str
    pattern: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    part: Any


@dataclass(frozen=True)
class Query:
    table: str
    columns: tuple[str, ...] | None            # None = *
    where: Any = None
    order: tuple[tuple[str, bool], ...] = ()   # (column, descending)
    top: int | None = None
    offset: int = 0
    fetch: int | None = None
    referenced: frozenset[str] = field(default_factory=frozenset)  # every column named anywhere


_KEYWORDS = frozenset({
    "SELECT", "TOP", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ORDER", "BY", "ASC",
    "DESC", "OFFSET", "ROWS", "ROW", "FETCH", "NEXT", "FIRST", "ONLY",
})
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>[Nn]?'(?:[^']|'')*')
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<quoted>"[^"]+"|\[[^\]]+\])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|=|<|>)
  | (?P<punct>[(),*])
""", re.VERBOSE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class _Tok:
    kind: str    # string number ident keyword op punct end
    text: str
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    outside = _strip_strings(text)
    if "--" in outside or "/*" in outside or ";" in outside:
        raise SqlError("one statement only, without comments")
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SqlError(f"Incorrect syntax near '{text[pos:pos + 10]}'")
        kind = match.lastgroup or ""
        raw = match.group()
        if kind == "string":
            body = raw[1:] if raw[0] in "Nn" else raw
            tokens.append(_Tok("string", raw, body[1:-1].replace("''", "'"), pos))
        elif kind == "number":
            tokens.append(_Tok("number", raw, Decimal(raw), pos))
        elif kind == "quoted":
            name = raw[1:-1]
            if not _IDENTIFIER.match(name):
                raise SqlError(f"Invalid identifier {raw}")
            tokens.append(_Tok("ident", raw, name, pos))
        elif kind == "word":
            upper = raw.upper()
            tokens.append(_Tok("keyword", upper, upper, pos) if upper in _KEYWORDS else _Tok("ident", raw, raw, pos))
        elif kind in ("op", "punct"):
            tokens.append(_Tok(kind, raw, raw, pos))
        pos = match.end()
    tokens.append(_Tok("end", "", None, len(text)))
    return tokens


def _strip_strings(text: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.columns: set[str] = set()

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def _next(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _is(self, *keywords: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value in keywords

    def _expect_keyword(self, keyword: str) -> None:
        if not self._is(keyword):
            raise self._error(f"expected {keyword}")
        self.i += 1

    def _expect_punct(self, punct: str) -> None:
        if self.tok.kind != "punct" or self.tok.value != punct:
            raise self._error(f"expected '{punct}'")
        self.i += 1

    def _error(self, what: str) -> SqlError:
        near = self.tok.text or "end of statement"
        return SqlError(f"Incorrect syntax near '{near}' ({what})")

    def _ident(self) -> str:
        tok = self._next()
        if tok.kind != "ident":
            self.i -= 1
            raise self._error("expected a column or table name")
        return tok.value

    def _column(self) -> str:
        name = self._ident()
        self.columns.add(name)
        return name

    def _int(self) -> int:
        tok = self._next()
        if tok.kind != "number" or tok.value != tok.value.to_integral_value() or tok.value < 0:
            self.i -= 1
            raise self._error("expected a non-negative whole number")
        return int(tok.value)

    def _literal(self) -> Any:
        tok = self._next()
        if tok.kind in ("string", "number"):
            return tok.value
        if tok.kind == "keyword" and tok.value == "NULL":
            return None
        self.i -= 1
        raise self._error("expected a literal")

    def parse(self) -> Query:
        self._expect_keyword("SELECT")
        top = None
        if self._is("TOP"):
            self.i += 1
            top = self._int()
        columns: list[str] | None
        if self.tok.kind == "punct" and self.tok.value == "*":
            self.i += 1
            columns = None
        else:
            columns = [self._column()]
            while self.tok.kind == "punct" and self.tok.value == ",":
                self.i += 1
                columns.append(self._column())
        self._expect_keyword("FROM")
        table = self._ident()
        where = None
        if self._is("WHERE"):
            self.i += 1
            where = self._expr()
        order: list[tuple[str, bool]] = []
        if self._is("ORDER"):
            self.i += 1
            self._expect_keyword("BY")
            while True:
                name = self._column()
                descending = False
                if self._is("ASC", "DESC"):
                    descending = self._next().value == "DESC"
                order.append((name, descending))
                if not (self.tok.kind == "punct" and self.tok.value == ","):
                    break
                self.i += 1
        offset, fetch = 0, None
        if self._is("OFFSET"):
            if not order:
                raise self._error("OFFSET needs ORDER BY")
            if top is not None:
                raise self._error("TOP cannot be combined with OFFSET")
            self.i += 1
            offset = self._int()
            if not self._is("ROWS", "ROW"):
                raise self._error("expected ROWS")
            self.i += 1
            if self._is("FETCH"):
                self.i += 1
                if not self._is("NEXT", "FIRST"):
                    raise self._error("expected NEXT")
                self.i += 1
                fetch = self._int()
                if not self._is("ROWS", "ROW"):
                    raise self._error("expected ROWS")
                self.i += 1
                self._expect_keyword("ONLY")
        if self.tok.kind != "end":
            raise self._error("unexpected text")
        return Query(table, tuple(columns) if columns is not None else None, where, tuple(order), top, offset,
                     fetch, frozenset(self.columns))

    def _expr(self) -> Any:
        parts = [self._term()]
        while self._is("OR"):
            self.i += 1
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def _term(self) -> Any:
        parts = [self._factor()]
        while self._is("AND"):
            self.i += 1
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def _factor(self) -> Any:
        if self._is("NOT"):
            self.i += 1
            return Not(self._factor())
        if self.tok.kind == "punct" and self.tok.value == "(":
            self.i += 1
            inner = self._expr()
            self._expect_punct(")")
            return inner
        column = self._column()
        if self.tok.kind == "op":
            op = self._next().value
            value = self._literal()
            return Compare(column, "<>" if op == "!=" else op, value)
        negated = False
        if self._is("NOT"):
            self.i += 1
            negated = True
            if not self._is("IN", "LIKE"):
                raise self._error("expected IN or LIKE after NOT")
        if self._is("IN"):
            self.i += 1
            self._expect_punct("(")
            values = [self._literal()]
            while self.tok.kind == "punct" and self.tok.value == ",":
                self.i += 1
                values.append(self._literal())
            self._expect_punct(")")
            return InList(column, tuple(values), negated)
        if self._is("LIKE"):
            self.i += 1
            tok = self._next()
            if tok.kind != "string":
                self.i -= 1
                raise self._error("LIKE takes a string")
            return Like(column, tok.value, negated)
        if self._is("IS"):
            self.i += 1
            is_not = False
            if self._is("NOT"):
                self.i += 1
                is_not = True
            self._expect_keyword("NULL")
            return IsNull(column, is_not)
        raise self._error("expected a comparison")


def parse_sql(text: str) -> Query:
    """Parse one SELECT of the subset, or raise :class:`SqlError`."""
    if not isinstance(text, str) or not text.strip():
        raise SqlError("empty query")
    if len(text) > 20_000:
        raise SqlError("query too long")
    return _Parser(text).parse()


def like_regex(pattern: str) -> re.Pattern[str]:
    """A LIKE pattern (``%`` any run, ``_`` one character) as an anchored regex."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.DOTALL)
