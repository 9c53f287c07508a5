from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from sync.store import BalanceSnapshot, BalanceSnapshotRow, Movement, Store, SyncRun, normalise_decimal
from sync.store.models import Connection

from .conftest import NOW

SHANGHAI = ZoneInfo("Asia/Shanghai")

QUANTITIES = [
    Decimal("0"),
    Decimal("1"),
    Decimal("-1"),
    Decimal("0.1"),
    Decimal("0.000000000001"),  # 12 places, the most the store keeps
    Decimal("12345678901234567890123456"),  # 26 integer digits, the most the store keeps
    Decimal("12345678901234567890123456.123456789012"),  # all 38 digits
    Decimal("-99999999999999999999999999.999999999999"),
    Decimal("3.141592653589"),
    Decimal("1E+3"),
    Decimal("2.500"),
]


def snapshot_rows(store: Store, values: list[Decimal]) -> list[Decimal | None]:
    with store.session() as s:
        snapshot = BalanceSnapshot(source_label="count sheet", taken_at=NOW)
        snapshot.rows = [
            BalanceSnapshotRow(sku=f"SKU-{i}", warehouse="WH1", on_hand=v, available=v, unit="PCS", unit_cost=v)
            for i, v in enumerate(values)
        ]
        s.add(snapshot)
        s.flush()
        snapshot_id = snapshot.id
    with store.session() as s:
        rows = s.scalars(
            select(BalanceSnapshotRow).where(BalanceSnapshotRow.snapshot_id == snapshot_id).order_by(BalanceSnapshotRow.id)
        ).all()
        for row in rows:
            assert row.on_hand == row.available == row.unit_cost
        return [row.on_hand for row in rows]


def test_quantities_round_trip_exactly(store: Store):
    # Given quantities at the edges of NUMERIC(38, 12)
    # When they are written and read back in another session
    back = snapshot_rows(store, QUANTITIES)
    # Then each comes back as the same Decimal, normalised the same way on every backend
    assert all(isinstance(value, Decimal) for value in back)
    assert back == QUANTITIES
    assert [value.as_tuple() for value in back] == [normalise_decimal(q).as_tuple() for q in QUANTITIES]
    assert str(back[QUANTITIES.index(Decimal("2.500"))]) == "2.5"
    assert str(back[QUANTITIES.index(Decimal("1E+3"))]) == "1000"


def test_sums_in_python_stay_exact(store: Store):
    # Given ten rows of 0.1 (a binary float would drift)
    back = snapshot_rows(store, [Decimal("0.1")] * 10)
    # Then they add up to exactly one
    assert sum(back, Decimal(0)) == Decimal("1")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0.1, TypeError),
        (True, TypeError),
        (Decimal("NaN"), ValueError),
        (Decimal("Infinity"), ValueError),
        (Decimal("0.0000000000001"), ValueError),  # 13 places
        (Decimal("123456789012345678901234567"), ValueError),  # 27 integer digits
    ],
)
def test_inexact_or_oversized_quantities_are_refused(store: Store, value, error):
    # When a quantity the store cannot keep exactly is written, Then it is refused, not rounded
    with pytest.raises(StatementError) as caught:
        snapshot_rows(store, [value])
    assert isinstance(caught.value.orig, error)


def test_normalise_decimal_spells_values_plainly():
    assert format(normalise_decimal(Decimal("1.2300")), "f") == "1.23"
    assert format(normalise_decimal(Decimal("-0.000")), "f") == "0"
    assert format(normalise_decimal(Decimal("5E+2")), "f") == "500"
    assert format(normalise_decimal("0.000000000001"), "f") == "0.000000000001"
    assert normalise_decimal(7) == Decimal(7)


@given(
    st.decimals(
        min_value=Decimal("-99999999999999999999999999.999999999999"),
        max_value=Decimal("99999999999999999999999999.999999999999"),
        places=12,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_normalise_decimal_keeps_the_value(value: Decimal):
    normal = normalise_decimal(value)
    assert normal == value
    assert Decimal(format(normal, "f")) == value
    assert normalise_decimal(format(normal, "f")) == normal


def test_datetimes_round_trip_as_aware_utc(store: Store):
    # Given instants in several zones, down to the microsecond
    started = datetime(2026, 1, 5, 17, 30, 15, 123456, tzinfo=SHANGHAI)
    since = datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    with store.session() as s:
        connection = Connection(name="sap", platform="sap_b1")
        s.add(connection)
        s.flush()
        run = SyncRun(connection_id=connection.id, entity="item", mode="incremental", started_at=started, since=since)
        s.add(run)
        s.flush()
        run_id = run.id
    # When they are read back in another session
    with store.session() as s:
        run = s.get_one(SyncRun, run_id)
        # Then they are the same instants, in UTC, with a tzinfo
        assert run.started_at == started
        assert run.since == since
        assert run.started_at.tzinfo is not None and run.started_at.utcoffset() == timedelta(0)
        assert run.started_at == datetime(2026, 1, 5, 9, 30, 15, 123456, tzinfo=timezone.utc)
        assert run.since.isoformat() == "2026-01-01T04:59:59.999999+00:00"
        assert run.updated_at.tzinfo is not None  # the column default is aware too


def test_datetime_comparisons_in_sql_respect_the_instant(store: Store):
    # Given runs started at instants written in different zones
    with store.session() as s:
        connection = Connection(name="u8", platform="u8")
        s.add(connection)
        s.flush()
        for hour in range(6):
            # 09:00+08:00 == 01:00Z, 10:00+08:00 == 02:00Z, ...
            s.add(
                SyncRun(
                    connection_id=connection.id,
                    entity=f"e{hour}",
                    mode="full",
                    started_at=datetime(2026, 1, 5, 9 + hour, tzinfo=SHANGHAI),
                )
            )
    # When filtered and ordered by a UTC bound in SQL
    with store.session() as s:
        entities = s.scalars(
            select(SyncRun.entity)
            .where(SyncRun.started_at >= datetime(2026, 1, 5, 3, tzinfo=timezone.utc))
            .order_by(SyncRun.started_at.desc())
        ).all()
    # Then the comparison is by instant
    assert entities == ["e5", "e4", "e3", "e2"]


def test_naive_datetimes_are_refused(store: Store):
    with pytest.raises(StatementError) as caught:
        with store.session() as s:
            s.add(BalanceSnapshot(source_label="count", taken_at=datetime(2026, 1, 5, 9, 0)))
    assert isinstance(caught.value.orig, ValueError)
    assert "naive" in str(caught.value.orig)


def test_payload_json_keeps_text_and_decimals(store: Store):
    # Given a payload with Chinese text and a Decimal
    payload = {"reference": "采购入库-001", "lines": [{"sku": "A-1", "quantity": Decimal("1.250")}]}
    with store.session() as s:
        s.add(
            Movement(
                reference="PR-1", kind="purchase_receipt", document_date=date(2026, 1, 5), payload=payload, content_hash="h"
            )
        )
    # When read back
    with store.session() as s:
        movement = s.scalars(select(Movement).where(Movement.reference == "PR-1")).one()
    # Then the text is intact and the Decimal is an exact string
    assert movement.payload == {"reference": "采购入库-001", "lines": [{"sku": "A-1", "quantity": "1.250"}]}
    assert movement.document_date == date(2026, 1, 5)


def test_a_missing_payload_is_sql_null(store: Store):
    from sync.store import ErrorQueue

    with store.session() as s:
        connection = Connection(name="k", platform="kingdee")
        s.add(connection)
        s.flush()
        s.add(
            ErrorQueue(
                connection_id=connection.id, entity="item", kind="Rejected", message="x", fingerprint="f", payload=None
            )
        )
    with store.session() as s:
        assert s.scalar(select(ErrorQueue.id).where(ErrorQueue.payload.is_(None))) is not None
