"""JSON Schemas of the public models, for `erphub schema` and vendor docs."""

from __future__ import annotations

from typing import Any, Literal

from .balances import StockBalance
from .base import CanonicalModel
from .master import Item, Location, Partner, Warehouse
from .movements import Movement, MovementLine
from .units import Unit, UnitConversion

__all__ = ["PUBLIC_MODELS", "json_schemas"]

# Every public model, in the order a reader meets them.
PUBLIC_MODELS: tuple[type[CanonicalModel], ...] = (
    Unit,
    UnitConversion,
    Item,
    Warehouse,
    Location,
    Partner,
    StockBalance,
    MovementLine,
    Movement,
)


def json_schemas(mode: Literal["validation", "serialization"] = "validation") -> dict[str, dict[str, Any]]:
    """Model name → JSON Schema. "validation" describes what we accept (the
    default, for people writing input); "serialization" what we emit."""
    return {model.__name__: model.model_json_schema(mode=mode) for model in PUBLIC_MODELS}
