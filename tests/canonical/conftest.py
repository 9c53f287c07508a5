"""Builders for valid raw records; each test changes only what it is about."""

from __future__ import annotations

from typing import Any

import pytest


def line(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"line_no": 1, "sku": "SKU-1", "quantity": "5", "unit": "PCS", "to_warehouse": "WH1"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}  # `...` drops a key


def movement(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reference": "MV-001",
        "kind": "purchase_receipt",
        "document_date": "2024-05-01",
        "counterparty": {"code": "SUP-1", "name": "Acme Supply", "role": "supplier"},
        "lines": [line()],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


@pytest.fixture
def make_movement():
    return movement


@pytest.fixture
def make_line():
    return line
