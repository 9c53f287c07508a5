"""Kingdee K3Cloud (金蝶云星空) WebAPI connector. Importing it registers ``KingdeeConnector`` as "kingdee"."""
from __future__ import annotations

from connectors.kingdee.connector import KingdeeConnector
from connectors.kingdee.settings import BillTypes, KingdeeSettings

__all__ = ["BillTypes", "KingdeeConnector", "KingdeeSettings"]
