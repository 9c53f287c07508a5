"""Jiandaoyun (简道云) v5 Open API connector. Importing it registers ``JiandaoyunConnector`` as "jiandaoyun"."""
from __future__ import annotations

from connectors.jiandaoyun.connector import JiandaoyunConnector
from connectors.jiandaoyun.settings import (
    ItemForm,
    JiandaoyunSettings,
    LedgerForm,
    MovementForm,
    WarehouseForm,
)

__all__ = ["ItemForm", "JiandaoyunConnector", "JiandaoyunSettings", "LedgerForm", "MovementForm", "WarehouseForm"]
