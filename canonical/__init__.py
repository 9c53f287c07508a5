"""The canonical inventory model every connector maps to.

Immutable pydantic models with Decimal quantities and timezone-aware datetimes.
This package imports nothing else of ours (DESIGN.md §2).

Validation reads an optional pydantic context: ``{"units": UnitCatalog,
"assume_tz": "Asia/Shanghai"}``; `parse()` builds it and turns failures into
`RecordInvalid`.
"""

from ._fields import FrozenMap, decimal_places, to_decimal
from .balances import StockBalance
from .base import CanonicalModel, record_label
from .errors import Problem, RecordInvalid, UnknownUnitError
from .hashing import canonical_json, content_hash
from .master import Item, Location, Partner, PartnerRole, Warehouse
from .movements import Movement, MovementKind, MovementLine, StockDelta, StockSign
from .parsing import field_path, parse, problems_from, validation_context
from .schema import PUBLIC_MODELS, json_schemas
from .units import Unit, UnitCatalog, UnitConversion, quantize

__all__ = [
    "PUBLIC_MODELS",
    "CanonicalModel",
    "FrozenMap",
    "Item",
    "Location",
    "Movement",
    "MovementKind",
    "MovementLine",
    "Partner",
    "PartnerRole",
    "Problem",
    "RecordInvalid",
    "StockBalance",
    "StockDelta",
    "StockSign",
    "Unit",
    "UnitCatalog",
    "UnitConversion",
    "UnknownUnitError",
    "Warehouse",
    "canonical_json",
    "content_hash",
    "decimal_places",
    "field_path",
    "json_schemas",
    "parse",
    "problems_from",
    "quantize",
    "record_label",
    "to_decimal",
    "validation_context",
]
