"""Canonical JSON and content hashes for change detection.

The hash must be equal for equal content however it was written (1.0 vs 1.00,
dict order, +08:00 vs Z for the same instant) and stable across processes and
Python versions, so we build plain JSON ourselves instead of trusting
model_dump_json's formatting.

Two rules keep stored hashes valid as the model grows:
- fields named in a model's ``_volatile_fields`` (modified_at, as_of) are left
  out: a re-read that only bumps a timestamp is not a change;
- fields equal to their declared default (None, (), {}, False, "PCS"…) are left
  out, so adding a new field with a default later does not change the hash of
  every record already stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime, timezone
from decimal import Context, Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

__all__ = ["canonical_data", "canonical_json", "content_hash", "decimal_text"]


def decimal_text(value: Decimal) -> str:
    """Shortest plain form: 1.0 and 1.00 → "1", 1E+2 → "100", -0 → "0"."""
    if value.is_zero():
        return "0"
    # normalize() rounds to the context precision, so give it every digit.
    return format(value.normalize(Context(prec=max(28, len(value.as_tuple().digits)))), "f")


_PLAIN = frozenset({str, int, bool})


def canonical_data(value: Any) -> Any:
    """Reduce a model (or value inside one) to JSON-safe plain data."""
    if value is None or type(value) in _PLAIN:  # the common case first (not str/int subclasses: enums)
        return value
    if isinstance(value, BaseModel):
        return _model_data(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):  # before date: datetime is a date
        if value.tzinfo is None:  # models never hold these; be explicit rather than guess
            raise ValueError("cannot hash a naive datetime")
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): canonical_data(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [canonical_data(v) for v in value]
    raise TypeError(f"cannot hash a {type(value).__name__}")


def _model_data(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, optional, default in _fields(type(model)):
        value = getattr(model, name)
        if optional and (value is None or (value == default and type(value) is type(default))
                         or (not value and _both_empty(value, default))):
            continue
        out[name] = canonical_data(value)
    return out


_FIELDS: dict[type[BaseModel], tuple[tuple[str, bool, Any], ...]] = {}


def _fields(model_cls: type[BaseModel]) -> tuple[tuple[str, bool, Any], ...]:
    """``(name, optional, default)`` of the hashed fields of a model class, worked out once per
    class: pydantic's ``get_default`` inspects a default factory's signature on every call, which
    was most of the cost of hashing a record. Default factories here are constants (``FrozenMap``,
    ``tuple``), so calling them once is the same as calling them per record."""
    fields = _FIELDS.get(model_cls)
    if fields is None:
        volatile = getattr(model_cls, "_volatile_fields", frozenset())  # a ClassVar (canonical.base)
        fields = tuple((name, not info.is_required(),
                        None if info.is_required() else info.get_default(call_default_factory=True))
                       for name, info in model_cls.model_fields.items() if name not in volatile)
        _FIELDS[model_cls] = fields
    return fields


def _both_empty(value: Any, default: Any) -> bool:
    # {} vs FrozenMap() and () vs [] are the same "nothing".
    empty = (Mapping, tuple, list)
    return isinstance(value, empty) and isinstance(default, empty) and not value and not default


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text kept as is."""
    return json.dumps(canonical_data(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any) -> str:
    """Hex sha256 of `canonical_json`."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
