"""Connection settings for Jiandaoyun (简道云) v5 (validated by erphub.config; secrets as env/file references).

Forms differ per tenant, so every form is named by its entry id and every field by a
*reference*: the field's alias, its permanent widget ID (``_widget_<13 digits>``) or its label.
The connector resolves references once per form through ``widget/list`` (widget ID, then alias,
then label; two widgets with the label is a configuration error) and reads records by the
field's current ``name``, so a tenant setting an alias later keeps working. The defaults are
the labels of the reference inventory app (``vendors/jiandaoyun.md`` §12) with the entry ids the
simulator seeds; a real tenant sets its own entry ids (and labels when they differ).
"""
from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from canonical import MovementKind
from connectors.base import ConnectionSettings, TimeZoneName

REFERENCE_APP_ID = "5e0dca0cc9a2790006c11e02"


def _entry(value: str) -> str:
    if len(value) != 24 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise ValueError(f"{value!r} is not a 24-hex entry id")
    return value


class _Form(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_id: str = Field(description="The form's entry id (24 hex digits)")

    @field_validator("entry_id")
    @classmethod
    def _check_entry(cls, value: str) -> str:
        return _entry(value)


class ItemForm(_Form):
    """物料: one record per item; ``sku`` is the business key. Optional fields may be None."""

    entry_id: str = "56fcab0f02c4675e3fe9694a"
    sku: str = "物料编码"
    name: str = "名称"
    spec: str | None = "规格型号"
    unit: str = "单位"
    category: str | None = "类别"
    barcode: str | None = "条形码"
    batch_managed: str | None = "批次管理"
    status: str | None = "状态"


class WarehouseForm(_Form):
    """仓库: one record per warehouse; ``code`` is the business key."""

    entry_id: str = "56fcab0f02c4675e3fe9694b"
    code: str = "仓库编码"
    name: str = "仓库名称"
    bin_managed: str | None = "库位管理"
    status: str | None = "状态"


# 业务类型 value → canonical kind. Writing uses the first value listed for a kind; the others
# (生产领料, 完工入库, 期初) are read only.
DEFAULT_KINDS: dict[str, MovementKind] = {
    "采购入库": MovementKind.purchase_receipt, "销售出库": MovementKind.sales_issue,
    "调拨": MovementKind.transfer, "盘盈": MovementKind.count_gain, "盘亏": MovementKind.count_loss,
    "销售退货": MovementKind.sales_return, "采购退货": MovementKind.purchase_return,
    "其他入库": MovementKind.misc_receipt, "其他出库": MovementKind.misc_issue, "报损": MovementKind.scrap,
    "完工入库": MovementKind.misc_receipt, "生产领料": MovementKind.misc_issue, "期初": MovementKind.misc_receipt,
}


class MovementForm(_Form):
    """出入库单 with its 明细 subform. ``key`` is the text field carrying the hub's idempotency key."""

    entry_id: str = "56fcab0f02c4675e3fe9694c"
    number: str | None = "单号"
    kind: str = "业务类型"
    date: str = "业务日期"
    warehouse: str = "仓库编码"
    from_warehouse: str = "调出仓库编码"
    to_warehouse: str = "调入仓库编码"
    partner_code: str | None = "往来单位编码"
    partner_name: str | None = "往来单位名称"
    reference: str = "参考号"
    key: str = "外部单号"
    memo: str | None = "备注"
    lines: str = "明细"
    line_sku: str = "物料编码"
    line_qty: str = "数量"
    line_unit: str = "单位"
    line_cost: str | None = "单价"
    line_lot: str | None = "批次号"
    line_from_bin: str | None = "调出库位"
    line_to_bin: str | None = "调入库位"
    kinds: dict[str, MovementKind] = Field(default_factory=lambda: dict(DEFAULT_KINDS))


class LedgerForm(_Form):
    """库存台账, kept by the tenant's automation: one record per stock position."""

    entry_id: str = "56fcab0f02c4675e3fe9694d"
    sku: str = "物料编码"
    warehouse: str = "仓库编码"
    bin: str | None = "库位"
    lot: str | None = "批次号"
    qty: str = "现存量"
    unit: str | None = "单位"
    changed_at: str | None = "最近变动时间"


class RateLimits(BaseModel):
    """Client-side calls per second, below the vendor's 30 / 20 / 10 and 50 per company."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    read: float = Field(25.0, gt=0)
    write: float = Field(15.0, gt=0)
    batch: float = Field(8.0, gt=0)
    company: float = Field(45.0, gt=0)


class JiandaoyunSettings(ConnectionSettings):
    """``url`` is the API base ending ``/api`` (``https://api.jiandaoyun.com/api``; Jodoo and private
    deployments use other hosts)."""

    platform: Literal["jiandaoyun"] = "jiandaoyun"
    url: str = Field("https://api.jiandaoyun.com/api", description="API base URL, ending /api")
    api_key: SecretStr = Field(description="API key (开放平台 » 密钥管理), sent as a Bearer token")
    app_id: str = Field(REFERENCE_APP_ID, description="The app holding the inventory forms")
    items: ItemForm = Field(default_factory=ItemForm)
    warehouses: WarehouseForm = Field(default_factory=WarehouseForm)
    movements: MovementForm = Field(default_factory=MovementForm)
    ledger: LedgerForm | None = Field(default_factory=LedgerForm,
                                      description="Stock ledger form; None recomputes balances from movements")
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    rate_limited_wait: float = Field(5.0, ge=0, description="Seconds to wait after error 8303 when the answer "
                                                            "names no Retry-After (the official demos wait 5 s)")
    webhook_secret: SecretStr | None = Field(None, description="Secret of the forms' data push (数据推送)")
    webhook_max_age_seconds: int = Field(300, ge=1, description="Refuse pushes whose timestamp is older (or "
                                                                "further in the future) than this")
    timezone: TimeZoneName = Field("Asia/Shanghai", description="Tenant zone: date-only values are local midnight")
    page_size: int = Field(100, ge=1, description="Records per data/list call (at most 100)")
    start_workflow: bool = Field(False, description="is_start_workflow on created movements")
    start_trigger: bool = Field(False, description="is_start_trigger on created movements (run automations)")

    @field_validator("app_id")
    @classmethod
    def _check_app(cls, value: str) -> str:
        return _entry(value)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
