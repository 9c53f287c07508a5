"""The base every canonical model shares: immutability, keys, hashes, labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from .hashing import content_hash

__all__ = ["CanonicalModel", "record_label"]


class CanonicalModel(BaseModel):
    """Immutable, closed (unknown fields are errors, not silently dropped)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields forming the natural key, in natural_key order.
    _key_fields: ClassVar[tuple[str, ...]] = ()
    # Fields naming the record for humans, most specific first
    # (a bin is "A-01-01 in WH1", not "WH1 A-01-01").
    _label_fields: ClassVar[tuple[str, ...]] = ()
    # Fields that change on every read without the record changing.
    _volatile_fields: ClassVar[frozenset[str]] = frozenset({"modified_at", "as_of"})

    @property
    def natural_key(self) -> Any:
        """A single value for one-field keys, else a tuple in declared order."""
        values = tuple(getattr(self, name) for name in self._key_fields)
        return values[0] if len(values) == 1 else values

    def content_hash(self) -> str:
        """Hex sha256 of the canonical JSON; see canonical.hashing for the rules."""
        return content_hash(self)

    def replace(self, /, *, context: Mapping[str, Any] | None = None, **changes: Any) -> Self:
        """A validated copy with some fields changed.

        Use this rather than pydantic's model_copy(update=...), which skips
        validation and could produce a record that breaks the rules.
        """
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(changes)
        return type(self).model_validate(data, context=context)

    @property
    def label(self) -> str:
        """How errors and logs name this record, e.g. ``Movement 'MV-001'``."""
        return record_label(type(self), self)


def record_label(model_cls: type[BaseModel], data: object, index: int | None = None) -> str:
    """Name a record from raw input, which may be missing its key or be invalid.

    ``Movement 'MV-001'``; ``Location 'A-01-01' (warehouse 'WH1')``; when the
    primary key is missing: ``Movement #3`` if an index is given, else
    ``Movement (unnamed)``.
    """
    name = model_cls.__name__
    fields = getattr(model_cls, "_label_fields", ()) or getattr(model_cls, "_key_fields", ())
    if not fields:
        return name if index is None else f"{name} #{index}"
    primary, *rest = fields
    key = _raw_value(data, primary)
    head = f"{name} {_quote(key)}" if key is not None else (f"{name} #{index}" if index is not None else f"{name} (unnamed)")
    extra = [f"{field} {_quote(v)}" for field in rest if (v := _raw_value(data, field)) is not None]
    return f"{head} ({', '.join(extra)})" if extra else head


def _raw_value(data: object, field: str) -> object | None:
    if isinstance(data, Mapping):
        value = data.get(field)
    elif isinstance(data, BaseModel):
        value = getattr(data, field, None)
    else:
        return None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _quote(value: object) -> str:
    text = str(value).strip() if isinstance(value, str) else str(value)
    if len(text) > 80:  # a garbage key must not flood the error line
        text = text[:77] + "..."
    return repr(text)
