"""Connection settings for Kingdee K3Cloud (validated by erphub.config; secrets as env/file references)."""
from __future__ import annotations

import re
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.base import ConnectionSettings, TimeZoneName

_FIELD_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_DOTTED_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}(\.[A-Za-z][A-Za-z0-9_]{0,63})?$")


class BillTypes(BaseModel):
    """Bill type number (``FBillTypeID.FNumber``) per movement kind (kingdee.md §9)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    purchase_receipt: str = "RKD01_SYS"
    sales_issue: str = "XSCKD01_SYS"
    sales_return: str = "XSTHD01_SYS"
    purchase_return: str = "TLD01_SYS"
    transfer: str = "ZJDB01_SYS"
    count_gain: str = "PY01_SYS"
    count_loss: str = "PK01_SYS"
    misc_receipt: str = "QTRKD01_SYS"
    misc_issue: str = "QTCKD01_SYS"
    # A tenant bill type of STK_MisDelivery reserved for scrap (报损). None: scrap uses misc_issue's
    # bill type and is told apart by ``scrap_marker`` in the key field.
    scrap: str | None = None


class KingdeeSettings(ConnectionSettings):
    """``url`` is the site root ending ``/k3cloud/`` (e.g. ``http://erp.example/k3cloud/``)."""

    platform: Literal["kingdee"] = "kingdee"
    acct_id: str = Field(min_length=1, description="Data centre (account set) id")
    username: str = Field(min_length=1, description="K3Cloud user the integration acts as")
    app_id: str = Field("", description="Third-party app id, '<clientId>_<secret part>'")
    app_secret: SecretStr | None = Field(None, description="App secret (signature auth, LoginByAppSecret)")
    password: SecretStr | None = Field(None, description="User password (session auth with ValidateUser)")
    auth: Literal["signature", "session"] = Field(
        "signature", description="Per-request SDK signature or a session login (default: signature when "
                                 "app_secret is set, else session with the password)")
    login: Literal["app_secret", "password"] | None = Field(
        None, description="Session login call: LoginByAppSecret or ValidateUser (default: password when set)")
    lcid: int = Field(2052, description="2052 zh-CN, 1033 en-US, 3076 zh-TW")
    sign_org_num: str = Field("0", description="org_num signed into X-Kd-Appdata (not validated by servers)")
    stock_org: str = Field("100", min_length=1, description="Inventory organisation number (FStockOrgId)")
    purchase_org: str | None = Field(None, description="Purchase organisation number; default stock_org")
    sale_org: str | None = Field(None, description="Sales organisation number; default stock_org")
    timezone: TimeZoneName = Field("Asia/Shanghai", description="Zone of the server's zone-less datetimes")
    max_page_size: int = Field(2000, ge=1, le=10000, description="The server's WebAPIMaxQueryLimit (2000 or "
                                                                 "10000 by patch level)")
    bill_types: BillTypes = Field(default_factory=BillTypes)
    key_field: str = Field("FNote", description="Head field that carries our idempotency key: FBillNo "
                                               "(manual numbering allowed) or a remark/custom text field")
    reference_field: str | None = Field(
        "FBillNo", description="Head field the movement reference is written to and read back from; FBillNo "
                               "needs manual numbering allowed; None leaves numbering to Kingdee")
    scrap_marker: str = Field("#scrap", min_length=1, max_length=32,
                              description="Written to scrap_marker_field on each line of a scrap issue when scrap "
                                          "has no bill type of its own")
    scrap_marker_field: str = Field("FEntryNote", description="STK_MisDelivery entry field carrying scrap_marker")
    barcode_field: str | None = Field("FBarCode", description="BD_MATERIAL field read into Item.barcode")
    category_field: str | None = Field(None, description="BD_MATERIAL field read into Item.category, e.g. "
                                                         "FMaterialGroup.FNumber")
    auto_submit_audit: bool = Field(False, description="One Save with IsAutoSubmitAndAudit instead of "
                                                       "Save → Submit → Audit")
    allow_negative_stock: bool = Field(False, description="Audit with InterationFlags STK_InvCheckResult")
    delete_rejected_bills: bool = Field(True, description="After a refused Audit, withdraw and delete the "
                                                         "unaudited bill so a retry starts clean")
    units: dict[str, str] = Field(default_factory=dict, description="Canonical unit code → Kingdee unit number")
    material_attribute_fields: dict[str, str] = Field(
        default_factory=dict, description="Item attribute name → BD_MATERIAL field key (custom F_xxx fields)")
    head_fields: dict[str, Any] = Field(default_factory=dict,
                                        description="Constant head fields written on every bill")
    filter_use_org: bool = Field(True, description="Read master data of stock_org only (FUseOrgId)")
    master_batch_size: int = Field(
        100, ge=1, le=1000, description="Materials/warehouses per upsert batch: one lookup, one BatchSave (Model "
                                        "array), one Submit and one Audit per batch (capabilities.max_batch)")

    @model_validator(mode="before")
    @classmethod
    def _default_auth(cls, data: Any) -> Any:
        """Without ``auth``: signature when an app secret is given, else a session login with the password."""
        if isinstance(data, dict) and data.get("auth") is None:
            data = dict(data)
            has_secret = data.get("app_secret") is not None
            data["auth"] = "session" if not has_secret and data.get("password") is not None else "signature"
        return data

    @field_validator("key_field", "reference_field", "scrap_marker_field")
    @classmethod
    def _key_field(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD_KEY.match(value):
            raise ValueError(f"{value!r} is not a field key")
        return value

    @field_validator("barcode_field", "category_field")
    @classmethod
    def _dotted_field(cls, value: str | None) -> str | None:
        if value is not None and not _DOTTED_KEY.match(value):
            raise ValueError(f"{value!r} is not a field key")
        return value

    @field_validator("material_attribute_fields")
    @classmethod
    def _attribute_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value.values():
            if not _FIELD_KEY.match(key):
                raise ValueError(f"{key!r} is not a field key")
        return value

    @field_validator("head_fields")
    @classmethod
    def _head_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not _FIELD_KEY.match(key):
                raise ValueError(f"{key!r} is not a field key")
        return value

    @field_validator("scrap_marker")
    @classmethod
    def _marker(cls, value: str) -> str:
        if value != value.strip() or " " in value:
            raise ValueError("must be one word without spaces")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> KingdeeSettings:
        if self.reference_field is not None and self.reference_field.lower() == self.key_field.lower():
            raise ValueError("key_field and reference_field must be different fields (set reference_field = "
                             "null to leave the reference out)")
        if self.auth == "signature" and (not self.app_id or self.app_secret is None):
            raise ValueError("auth = \"signature\" needs app_id and app_secret")
        if self.auth == "session":
            method = self.login_method
            if method == "password" and self.password is None:
                raise ValueError("login = \"password\" (ValidateUser) needs password")
            if method == "app_secret" and (not self.app_id or self.app_secret is None):
                raise ValueError("login = \"app_secret\" (LoginByAppSecret) needs app_id and app_secret")
        return self

    @property
    def login_method(self) -> Literal["app_secret", "password"]:
        if self.login is not None:
            return self.login
        return "password" if self.password is not None else "app_secret"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
