"""`parse`: validate a raw record and turn pydantic's errors into ours."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import tzinfo
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ._fields import resolve_zone
from .base import record_label
from .errors import Problem, RecordInvalid
from .units import Unit, UnitCatalog

__all__ = ["field_path", "parse", "problems_from", "validation_context"]

M = TypeVar("M", bound=BaseModel)

# pydantic's wording for the errors our own validators do not produce.
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def validation_context(
    *, units: UnitCatalog | Iterable[Unit] | None = None, assume_tz: str | tzinfo | None = None
) -> dict[str, Any]:
    """The pydantic context canonical models read: ``{"units": ..., "assume_tz": ...}``.

    A bad time zone name is a configuration error, so it raises ValueError here
    instead of failing every record.
    """
    context: dict[str, Any] = {}
    if units is not None:
        context["units"] = units if isinstance(units, UnitCatalog) else UnitCatalog(units)
    if assume_tz is not None:
        context["assume_tz"] = resolve_zone(assume_tz)
    return context


def parse(
    model_cls: type[M],
    data: Any,
    *,
    units: UnitCatalog | Iterable[Unit] | None = None,
    assume_tz: str | tzinfo | None = None,
    index: int | None = None,
) -> M:
    """Validate `data` (a mapping, a model, or JSON text) as `model_cls`.

    Raises RecordInvalid naming the record from the raw input (`index` is used,
    as given, when the key itself is missing: ``Movement #3``).
    """
    context = validation_context(units=units, assume_tz=assume_tz)
    if isinstance(data, (str, bytes, bytearray)):
        try:
            # parse_float=Decimal: JSON numbers arrive exact, not via float.
            data = json.loads(data, parse_float=Decimal)
        except ValueError as exc:
            label = record_label(model_cls, None, index)
            raise RecordInvalid(label, [Problem("", f"is not valid JSON ({exc})", "json_invalid")]) from None
    try:
        return model_cls.model_validate(data, context=context)
    except ValidationError as exc:
        raise RecordInvalid(record_label(model_cls, data, index), problems_from(exc)) from None


def problems_from(exc: ValidationError) -> list[Problem]:
    """Our Problems for a pydantic ValidationError (also useful when a model was
    constructed directly and the caller wants our wording)."""
    problems = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        message = _MESSAGES.get(err["type"], err["msg"])
        for prefix in _PREFIXES:
            message = message.removeprefix(prefix)
        if message[:1].isupper() and message[1:2].islower():  # "Input should…" → "input should…"
            message = message[0].lower() + message[1:]
        problems.append(Problem(field_path(err["loc"]), message, err["type"]))
    return problems


def field_path(loc: Iterable[str | int]) -> str:
    """``("lines", 0, "quantity")`` → ``lines[0].quantity``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
