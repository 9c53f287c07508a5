"""The true stock of a simulated vendor system: balances by (sku, warehouse, bin, lot).

A simulator posts a document's stock effect in one call; the posting applies completely or not
at all. Tests read the ledger (directly or through ``GET /_admin/ledger``) to check what a push
really changed, independent of what the vendor API answered.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, NamedTuple


class StockKey(NamedTuple):
    sku: str
    warehouse: str
    bin: str | None = None
    lot: str | None = None


def to_decimal(value: object, what: str = "quantity") -> Decimal:
    """``Decimal`` from a Decimal, int or numeric string; floats are refused (binary rounding)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{what} must be a Decimal, int or string, not {type(value).__name__} {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(value)
        except ArithmeticError:
            raise ValueError(f"{what} {value!r} is not a number") from None
    else:
        raise TypeError(f"{what} must be a Decimal, int or string, not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{what} {value!r} is not finite")
    return result


@dataclass(frozen=True)
class Entry:
    """One line of a posting: ``qty_delta`` > 0 puts stock in, < 0 takes it out."""

    sku: str
    warehouse: str
    qty_delta: Decimal
    bin: str | None = None
    lot: str | None = None

    def __post_init__(self) -> None:
        for name in ("sku", "warehouse"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"entry {name} must be a non-empty string, got {getattr(self, name)!r}")
        object.__setattr__(self, "qty_delta", to_decimal(self.qty_delta, "qty_delta"))

    @property
    def key(self) -> StockKey:
        return StockKey(self.sku, self.warehouse, self.bin, self.lot)


@dataclass(frozen=True)
class Shortfall:
    """A line that would take a balance below zero: ``requested`` out of ``on_hand``."""

    sku: str
    warehouse: str
    bin: str | None
    lot: str | None
    on_hand: Decimal
    requested: Decimal

    def __str__(self) -> str:
        where = "/".join(part for part in (self.warehouse, self.bin, self.lot) if part)
        return f"{self.sku} @ {where}: on hand {self.on_hand}, requested {self.requested}"


class LedgerError(Exception):
    pass


class NegativeStock(LedgerError):
    """The posting would leave at least one balance below zero; nothing was posted."""

    def __init__(self, document_ref: str, shortfalls: list[Shortfall]) -> None:
        self.document_ref = document_ref
        self.shortfalls = shortfalls
        super().__init__(f"{document_ref}: negative stock on " + "; ".join(map(str, shortfalls)))


class AlreadyPosted(LedgerError):
    def __init__(self, document_ref: str) -> None:
        self.document_ref = document_ref
        super().__init__(f"{document_ref} is already posted")


class NotPosted(LedgerError):
    def __init__(self, document_ref: str) -> None:
        self.document_ref = document_ref
        super().__init__(f"{document_ref} is not posted")


@dataclass(frozen=True)
class Posting:
    """One applied change: ``post`` of a document, or the ``reverse`` that undid it."""

    seq: int
    document_ref: str
    kind: Literal["post", "reverse"]
    entries: tuple[Entry, ...]
    at: float


class Ledger:
    """Thread-safe in-memory stock ledger.

    Negative stock is refused unless allowed, the most specific setting winning: the
    ``allow_negative`` argument of a call, then the warehouse's setting, then the ledger's.
    """

    def __init__(self, *, allow_negative: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.allow_negative = allow_negative
        self.clock = clock
        self._default_allow_negative = allow_negative
        self._lock = threading.RLock()
        self._warehouse_policy: dict[str, bool] = {}
        self._balances: dict[StockKey, Decimal] = {}
        self._history: list[Posting] = []
        self._active: dict[str, Posting] = {}

    # --- policy ---------------------------------------------------------------------------

    def set_warehouse_policy(self, warehouse: str, *, allow_negative: bool | None) -> None:
        """Allow or refuse negative stock in one warehouse; ``None`` falls back to the ledger's."""
        with self._lock:
            if allow_negative is None:
                self._warehouse_policy.pop(warehouse, None)
            else:
                self._warehouse_policy[warehouse] = allow_negative

    def negative_allowed(self, warehouse: str, allow_negative: bool | None = None) -> bool:
        if allow_negative is not None:
            return allow_negative
        with self._lock:
            return self._warehouse_policy.get(warehouse, self.allow_negative)

    # --- changes --------------------------------------------------------------------------

    def post(self, document_ref: str, entries: Iterable[Entry], *, allow_negative: bool | None = None) -> Posting:
        """Apply every entry, or none: raises :class:`NegativeStock` naming every short line.

        A document is posted once until it is reversed.
        """
        entries = tuple(entries)
        if not entries:
            raise ValueError(f"{document_ref}: a posting needs at least one entry")
        with self._lock:
            if document_ref in self._active:
                raise AlreadyPosted(document_ref)
            posting = self._apply(document_ref, "post", entries, allow_negative)
            self._active[document_ref] = posting
            return posting

    def reverse(self, document_ref: str, *, allow_negative: bool | None = None) -> Posting:
        """Undo a posting (un-audit, cancel). Refused like a post if stock has gone since."""
        with self._lock:
            original = self._active.get(document_ref)
            if original is None:
                raise NotPosted(document_ref)
            negated = tuple(
                Entry(e.sku, e.warehouse, -e.qty_delta, bin=e.bin, lot=e.lot) for e in original.entries
            )
            posting = self._apply(document_ref, "reverse", negated, allow_negative)
            del self._active[document_ref]
            return posting

    def _apply(
        self, document_ref: str, kind: Literal["post", "reverse"], entries: tuple[Entry, ...],
        allow_negative: bool | None,
    ) -> Posting:
        net: dict[StockKey, Decimal] = {}
        for entry in entries:
            net[entry.key] = net.get(entry.key, Decimal(0)) + entry.qty_delta
        shortfalls = []
        for key, delta in net.items():
            on_hand = self._balances.get(key, Decimal(0))
            if on_hand + delta < 0 and delta < 0 and not self.negative_allowed(key.warehouse, allow_negative):
                shortfalls.append(Shortfall(*key, on_hand=on_hand, requested=-delta))
        if shortfalls:
            raise NegativeStock(document_ref, shortfalls)
        for key, delta in net.items():
            self._balances[key] = self._balances.get(key, Decimal(0)) + delta
        posting = Posting(len(self._history) + 1, document_ref, kind, entries, self.clock())
        self._history.append(posting)
        return posting

    def seed_balances(self, balances: Mapping[StockKey | tuple, object]) -> None:
        """Set opening balances (replacing those keys); not recorded in the history."""
        parsed = {StockKey(*key): to_decimal(qty, f"balance of {tuple(key)}") for key, qty in balances.items()}
        with self._lock:
            self._balances.update(parsed)

    def reset(self) -> None:
        """Back to a fresh ledger: no balances, history or warehouse settings."""
        with self._lock:
            self.allow_negative = self._default_allow_negative
            self._warehouse_policy.clear()
            self._balances.clear()
            self._history.clear()
            self._active.clear()

    # --- reads ----------------------------------------------------------------------------

    def balance(self, sku: str, warehouse: str, bin: str | None = None, lot: str | None = None) -> Decimal:
        with self._lock:
            return self._balances.get(StockKey(sku, warehouse, bin, lot), Decimal(0))

    def total(self, sku: str, warehouse: str | None = None) -> Decimal:
        """On hand summed over bins and lots (and over warehouses when none is given)."""
        with self._lock:
            return sum(
                (qty for key, qty in self._balances.items()
                 if key.sku == sku and (warehouse is None or key.warehouse == warehouse)),
                Decimal(0),
            )

    def balances(self) -> dict[StockKey, Decimal]:
        """A snapshot of every balance ever touched (zeros included), sorted by key."""
        with self._lock:
            items = list(self._balances.items())
        return dict(sorted(items, key=lambda item: tuple("" if part is None else part for part in item[0])))

    def history(self) -> tuple[Posting, ...]:
        with self._lock:
            return tuple(self._history)

    def is_posted(self, document_ref: str) -> bool:
        with self._lock:
            return document_ref in self._active
