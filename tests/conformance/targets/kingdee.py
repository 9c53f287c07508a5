"""Kingdee K3Cloud conformance targets: the connector against ``sandbox.kingdee`` over loopback.

Three targets, one per way a tenant posts and signs in:

* ``kingdee`` — the official SDK's per-request signature, Save → Submit → Audit (3 calls);
* ``kingdee-session`` — session login (ValidateUser with a password), the same 3-call posting;
* ``kingdee-autoaudit`` — signature, one Save with ``IsAutoSubmitAndAudit``.
"""
from __future__ import annotations

from typing import Any

from connectors.kingdee import KingdeeSettings
from sandbox.kingdee import KingdeeSimulator
from sandbox.kingdee_auth import DEFAULT_ACCT_ID, DEFAULT_APP_ID, DEFAULT_APP_SECRET, DEFAULT_PASSWORD, DEFAULT_USER
from tests.conformance.target import ConformanceTarget

WRONG = "0123456789abcdef0123456789abcdeX"


def simulator(**kwargs: Any) -> KingdeeSimulator:
    return KingdeeSimulator(**kwargs)


def _settings(url: str, good_credentials: bool, overrides: dict[str, Any], **fields: Any) -> KingdeeSettings:
    return KingdeeSettings(url=f"{url}/k3cloud/", acct_id=DEFAULT_ACCT_ID, username=DEFAULT_USER, **fields,
                           **overrides)


def signature_settings(url: str, good_credentials: bool = True, **overrides: Any) -> KingdeeSettings:
    return _settings(url, good_credentials, overrides, auth="signature", app_id=DEFAULT_APP_ID,
                     app_secret=DEFAULT_APP_SECRET if good_credentials else WRONG)


def session_settings(url: str, good_credentials: bool = True, **overrides: Any) -> KingdeeSettings:
    return _settings(url, good_credentials, overrides, auth="session", login="password",
                     password=DEFAULT_PASSWORD if good_credentials else "not-the-password")


def auto_audit_settings(url: str, good_credentials: bool = True, **overrides: Any) -> KingdeeSettings:
    return signature_settings(url, good_credentials, auto_submit_audit=True, **overrides)


EXTRAS: dict[str, Any] = {
    # the world has no material groups as text: Item.category is not mapped by default
    "item_fields": ("sku", "name", "base_unit", "spec", "barcode", "batch_managed"),
    "rejected_vendor_code": "11",  # negative stock on Audit: MsgCode 11 (validation failed)
    "push_fault_target": {"operation": "Audit"},  # stock is posted by the Audit call
    "read_fault_target": {"operation": "ExecuteBillQuery"},
}

TARGETS = [
    ConformanceTarget(platform="kingdee", id="kingdee", simulator=simulator, settings=signature_settings,
                      extras=EXTRAS),
    ConformanceTarget(platform="kingdee", id="kingdee-session", simulator=simulator, settings=session_settings,
                      extras={**EXTRAS, "login_operation": "ValidateUser"}),
    ConformanceTarget(platform="kingdee", id="kingdee-autoaudit", simulator=simulator, settings=auto_audit_settings,
                      extras={**EXTRAS, "push_fault_target": {"operation": "Save"}}),
]
