"""Model behaviour: immutability, keys, kinds, schemas, serialisation."""

from __future__ import annotations

import pickle
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import canonical
from canonical import (
    Item,
    Location,
    Movement,
    MovementKind,
    Partner,
    PartnerRole,
    StockBalance,
    StockDelta,
    Unit,
    UnitConversion,
    Warehouse,
    json_schemas,
    parse,
)

from .conftest import line, movement

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


def samples() -> dict[str, BaseModel]:
    """One valid instance of every public model."""
    mv = parse(
        Movement,
        movement(kind="transfer", counterparty=..., lines=[line(from_warehouse="WH1", from_bin="A-01-01", to_warehouse="WH2", lot="L7")]),
    )
    return {
        "Unit": Unit(code="kg", name="kilogram", precision=3),
        "UnitConversion": UnitConversion(unit="BOX", factor=12),
        "Item": Item(sku="SKU-1", name="Bolt", conversions=[{"unit": "BOX", "factor": 12}], attributes={"size": "M"}, modified_at=T0),
        "Warehouse": Warehouse(code="WH1", name="Main", bin_managed=True),
        "Location": Location(warehouse="WH1", code="A-01-01"),
        "Partner": Partner(code="C1", name="Shop", role="customer"),
        "StockBalance": StockBalance(sku="SKU-1", warehouse="WH1", bin="A-01-01", on_hand=Decimal("-2"), unit="PCS", as_of=T0),
        "MovementLine": mv.lines[0],
        "Movement": mv,
    }


SAMPLES = samples()
PUBLIC_MODELS = [obj for name in canonical.__all__ if isinstance(obj := getattr(canonical, name), type) and issubclass(obj, BaseModel) and obj is not canonical.CanonicalModel]


def test_samples_cover_every_public_model():
    assert {m.__name__ for m in PUBLIC_MODELS} == set(SAMPLES)


@given(name=st.sampled_from(sorted(SAMPLES)), field=st.data())
def test_frozen_models_cannot_be_mutated(name, field):
    # Given any model and any of its fields
    obj = SAMPLES[name]
    attr = field.draw(st.sampled_from(sorted(type(obj).model_fields)))
    # When a field is assigned (or deleted)
    # Then it is refused and the value is unchanged
    before = getattr(obj, attr)
    with pytest.raises(ValidationError):
        setattr(obj, attr, before)
    with pytest.raises((ValidationError, AttributeError, TypeError)):
        delattr(obj, attr)
    assert getattr(obj, attr) == before


def test_nested_collections_are_immutable_too():
    item = SAMPLES["Item"]
    with pytest.raises(TypeError):
        item.attributes["size"] = "L"  # type: ignore[index]
    assert isinstance(item.conversions, tuple) and isinstance(SAMPLES["Movement"].lines, tuple)
    assert item.attributes == {"size": "M"}


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        Warehouse(code="W", name="n", colour="red")  # type: ignore[call-arg]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_models_are_hashable_picklable_and_round_trip_through_json(name):
    obj = SAMPLES[name]
    assert hash(obj) == hash(type(obj).model_validate_json(obj.model_dump_json()))
    assert type(obj).model_validate_json(obj.model_dump_json()) == obj
    assert pickle.loads(pickle.dumps(obj)) == obj


def test_natural_keys():
    s = SAMPLES
    assert s["Item"].natural_key == "SKU-1"
    assert s["Warehouse"].natural_key == "WH1"
    assert s["Location"].natural_key == ("WH1", "A-01-01")
    assert s["Partner"].natural_key == "C1"
    assert s["StockBalance"].natural_key == ("SKU-1", "WH1", "A-01-01", None)
    assert s["Movement"].natural_key == "MV-001"
    assert s["Unit"].natural_key == "KG"


@pytest.mark.parametrize(
    ("kind", "direction", "role", "sign"),
    [
        ("purchase_receipt", "in", PartnerRole.supplier, (0, 1)),
        ("sales_issue", "out", PartnerRole.customer, (-1, 0)),
        ("transfer", "transfer", None, (-1, 1)),
        ("count_gain", "in", None, (0, 1)),
        ("count_loss", "out", None, (-1, 0)),
        ("sales_return", "in", PartnerRole.customer, (0, 1)),
        ("purchase_return", "out", PartnerRole.supplier, (-1, 0)),
        ("misc_receipt", "in", None, (0, 1)),
        ("misc_issue", "out", None, (-1, 0)),
        ("scrap", "out", None, (-1, 0)),
    ],
)
def test_movement_kinds(kind, direction, role, sign):
    k = MovementKind(kind)
    assert (k.direction, k.partner_role, tuple(k.stock_sign)) == (direction, role, sign)
    assert k.stock_sign.from_warehouse == sign[0] and k.stock_sign.to_warehouse == sign[1]


def test_every_kind_is_covered():
    assert len(MovementKind) == 10


def test_stock_deltas_follow_the_kind():
    # Given a transfer of 5 from WH1/A-01-01 to WH2
    mv = SAMPLES["Movement"]
    # Then stock leaves the source bin and arrives in the destination
    assert mv.stock_deltas() == (
        StockDelta("SKU-1", "WH1", "A-01-01", "L7", Decimal("-5"), "PCS"),
        StockDelta("SKU-1", "WH2", None, "L7", Decimal("5"), "PCS"),
    )
    # And a receipt only adds
    receipt = parse(Movement, movement())
    assert [d.quantity for d in receipt.stock_deltas()] == [Decimal("5")]


def test_kinds_and_roles_accept_any_case():
    mv = parse(Movement, movement(kind=" Purchase_Receipt", counterparty={"code": "S", "name": "n", "role": "SUPPLIER"}))
    assert mv.kind is MovementKind.purchase_receipt and mv.counterparty.role is PartnerRole.supplier


def test_replace_validates():
    # Given a valid line
    ln = SAMPLES["MovementLine"]
    # When a field is replaced with a valid value, a new line results; an invalid one is refused
    assert ln.replace(quantity="7").quantity == 7 and ln.quantity == 5
    with pytest.raises(ValidationError):
        ln.replace(quantity=0)


def test_document_date_is_a_date():
    assert parse(Movement, movement()).document_date == date(2024, 5, 1)


def test_json_schemas_cover_every_model():
    # When the schemas are generated
    schemas = json_schemas()
    # Then every public model has one, closed to unknown fields
    assert set(schemas) == {m.__name__ for m in PUBLIC_MODELS} == {m.__name__ for m in canonical.PUBLIC_MODELS}
    for name, schema in schemas.items():
        assert schema["title"] == name and schema["type"] == "object"
        assert schema["additionalProperties"] is False
    # And the contract shows through: lines required and non-empty, quantities as number or string
    movement_schema = schemas["Movement"]
    assert {"reference", "kind", "document_date", "lines"} <= set(movement_schema["required"])
    assert movement_schema["properties"]["lines"]["minItems"] == 1
    quantity = movement_schema["$defs"]["MovementLine"]["properties"]["quantity"]
    assert {t.get("type") for t in quantity["anyOf"]} == {"number", "string"}
    assert schemas["Item"]["properties"]["attributes"]["additionalProperties"] == {"type": "string"}


def test_canonical_imports_nothing_else_of_ours():
    import ast
    from pathlib import Path

    ours = {"connectors", "sync", "compare", "sandbox", "erphub", "tests"}
    for path in Path(canonical.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not {n.split(".")[0] for n in names} & ours, path.name
