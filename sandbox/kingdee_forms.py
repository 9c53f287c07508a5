"""The K3Cloud business objects (forms) the simulator knows: field keys, entry keys, bill types,
numbering prefixes and each bill's stock effect (vendors/kingdee.md §9).

Field keys are matched case-insensitively, as the server does; the spelling here is the one
the simulator writes back (View, NeedReturnData). Lists are partial, like the doc's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# field kinds
TEXT, DATE, DECIMAL, INT, BOOL, ENUM, REF, PK = "text", "date", "decimal", "int", "bool", "enum", "ref", "pk"

ORG, UNIT, MATERIAL, STOCK, SUPPLIER, CUSTOMER = (
    "ORG_Organizations", "BD_UNIT", "BD_MATERIAL", "BD_STOCK", "BD_Supplier", "BD_Customer")
LOT, LOCATION, STATUS, BILLTYPE = "BD_BatchMainFile", "BD_StockLocation", "BD_StockStatus", "BOS_BillType"
INVENTORY = "STK_Inventory"


@dataclass(frozen=True)
class FieldDef:
    key: str
    kind: str
    label: str = ""
    ref: str | None = None  # the referenced form of a REF field
    default: object = None

    @property
    def name(self) -> str:
        return self.label or self.key


@dataclass(frozen=True)
class Movement:
    """One stock effect of an entry line on Audit: ``sign`` × base qty at the given fields."""

    sign: int
    material: str
    stock: str
    location: str
    lot: str


@dataclass
class Form:
    form_id: str
    name: str
    pk: str
    kind: str  # "bill", "base", "inventory", "internal" (not queryable)
    head: list[FieldDef]
    entry_key: str | None = None
    entry: list[FieldDef] = field(default_factory=list)
    number_key: str = "FBillNo"
    bill_type: str | None = None
    prefix: str = ""
    qty: str | None = None  # entry quantity field the user fills
    base_qty: str | None = None  # entry base-unit quantity the stock moves by
    movements: tuple[Movement, ...] = ()
    partner: str | None = None  # head field of the required supplier/customer
    direction_field: str | None = None  # head enum that reverses the movements when "RETURN"

    def __post_init__(self) -> None:
        self._head = {f.key.lower(): f for f in self.head}
        self._entry = {f.key.lower(): f for f in self.entry}

    def head_field(self, key: str) -> FieldDef | None:
        return self._head.get(key.lower())

    def entry_field(self, key: str) -> FieldDef | None:
        return self._entry.get(key.lower())

    @property
    def is_bill(self) -> bool:
        return self.kind == "bill"

    @property
    def has_forbid(self) -> bool:
        return self.head_field("FForbidStatus") is not None


def _f(key: str, kind: str, label: str = "", ref: str | None = None, default: object = None) -> FieldDef:
    return FieldDef(key, kind, label, ref, default)


def _base(form_id: str, name: str, pk: str, extra: list[FieldDef]) -> Form:
    head = [
        _f(pk, PK), _f("FNumber", TEXT, "编码"), _f("FName", TEXT, "名称"),
        _f("FDocumentStatus", ENUM, "数据状态", default="A"), _f("FForbidStatus", ENUM, "禁用状态", default="A"),
        _f("FCreateOrgId", REF, "创建组织", ORG), _f("FUseOrgId", REF, "使用组织", ORG),
        _f("FCreateDate", DATE, "创建日期"), _f("FModifyDate", DATE, "修改日期"),
        _f("FForbidDate", DATE, "禁用日期"), _f("FApproveDate", DATE, "审核日期"),
        _f("FDescription", TEXT, "描述", default=""), *extra,
    ]
    return Form(form_id, name, pk, "base", head, number_key="FNumber")


def _bill_head(extra: list[FieldDef]) -> list[FieldDef]:
    return [
        _f("FID", PK), _f("FBillNo", TEXT, "单据编号"), _f("FDate", DATE, "日期"),
        _f("FDocumentStatus", ENUM, "单据状态", default="Z"), _f("FCancelStatus", ENUM, "作废状态", default="A"),
        _f("FBillTypeID", REF, "单据类型", BILLTYPE), _f("FStockOrgId", REF, "库存组织", ORG),
        _f("FOwnerTypeIdHead", ENUM, "货主类型", default="BD_OwnerOrg"), _f("FOwnerIdHead", REF, "货主", ORG),
        _f("FNote", TEXT, "备注", default=""), _f("FCreateDate", DATE, "创建日期"),
        _f("FModifyDate", DATE, "修改日期"), _f("FApproveDate", DATE, "审核日期"), *extra,
    ]


def _lines(qty: str, base_qty: str, *, material: str = "FMaterialId", stock: str = "FStockId",
           location: str = "FStockLocId", lot: str = "FLot", status: str = "FStockStatusId",
           unit: str = "FUnitID", extra: tuple[FieldDef, ...] = ()) -> list[FieldDef]:
    return [
        _f(material, REF, "物料编码", MATERIAL), _f(unit, REF, "单位", UNIT), _f("FBaseUnitID", REF, "基本单位", UNIT),
        _f(qty, DECIMAL, "数量", default=0), _f(base_qty, DECIMAL, "基本单位数量", default=0),
        _f(stock, REF, "仓库", STOCK), _f(location, REF, "仓位", LOCATION), _f(lot, REF, "批号", LOT),
        _f(status, REF, "库存状态", STATUS), _f("FStockFlag", BOOL, "库存更新标志", default=False),
        _f("FProduceDate", DATE, "生产日期"), _f("FExpiryDate", DATE, "有效期至"),
        _f("FEntryNote", TEXT, "备注", default=""), *extra,
    ]


def _bill(form_id: str, name: str, entry_key: str, bill_type: str, prefix: str, head: list[FieldDef],
          qty: str, base_qty: str, sign: int, *, partner: str | None = None, direction: str | None = None,
          **lines: object) -> Form:
    entry = _lines(qty, base_qty, **lines)  # type: ignore[arg-type]
    material = entry[0].key
    stock, location, lot = (lines.get("stock", "FStockId"), lines.get("location", "FStockLocId"),
                            lines.get("lot", "FLot"))
    return Form(form_id, name, "FID", "bill", _bill_head(head), entry_key, entry, bill_type=bill_type,
                prefix=prefix, qty=qty, base_qty=base_qty, partner=partner, direction_field=direction,
                movements=(Movement(sign, material, str(stock), str(location), str(lot)),))


def build_forms() -> dict[str, Form]:
    forms = [
        _base(ORG, "组织机构", "FOrgID", []),
        _base(UNIT, "计量单位", "FUNITID", [_f("FPrecision", INT, "精度", default=0)]),
        _base(MATERIAL, "物料", "FMATERIALID", [
            _f("FSpecification", TEXT, "规格型号", default=""), _f("FBaseUnitId", REF, "基本单位", UNIT),
            _f("FIsBatchManage", BOOL, "启用批号管理", default=False), _f("FBarCode", TEXT, "条码", default=""),
            _f("FErpClsID", ENUM, "物料属性", default="1"), _f("FMaterialGroup", INT, "物料分组", default=0),
        ]),
        _base(STOCK, "仓库", "FStockId", [
            _f("FIsOpenLocation", BOOL, "启用仓位", default=False), _f("FGroup", INT, "仓库分组", default=0),
            _f("FAllowMinusQty", BOOL, "允许即时库存负库存", default=False),
        ]),
        _base(SUPPLIER, "供应商", "FSupplierId", [_f("FShortName", TEXT, "简称", default="")]),
        _base(CUSTOMER, "客户", "FCUSTID", [_f("FShortName", TEXT, "简称", default="")]),
        _base(LOT, "批号主档", "FLOTID", [_f("FMaterialId", REF, "物料", MATERIAL)]),
        _base(STATUS, "库存状态", "FStockStatusId", []),
        _base(BILLTYPE, "单据类型", "FBillTypeID", [_f("FBillFormID", TEXT, "单据", default="")]),
        Form(LOCATION, "仓位", "FID", "internal", [
            _f("FID", PK), _f("FNumber", TEXT, "编码"), _f("FName", TEXT, "名称"), _f("FStockId", REF, "仓库", STOCK)],
            number_key="FNumber"),
        Form(INVENTORY, "即时库存", "FID", "inventory", [
            _f("FID", TEXT), _f("FStockOrgId", REF, "库存组织", ORG), _f("FMaterialId", REF, "物料", MATERIAL),
            _f("FStockId", REF, "仓库", STOCK), _f("FStockLocId", REF, "仓位", LOCATION), _f("FLot", REF, "批号", LOT),
            _f("FStockStatusId", REF, "库存状态", STATUS), _f("FOwnerTypeId", ENUM, "货主类型"),
            _f("FOwnerId", REF, "货主", ORG), _f("FKeeperTypeId", ENUM, "保管者类型"), _f("FKeeperId", REF, "保管者", ORG),
            _f("FAuxPropId", INT, "辅助属性"), _f("FBaseUnitId", REF, "基本单位", UNIT),
            _f("FStockUnitId", REF, "库存单位", UNIT), _f("FBaseQty", DECIMAL, "库存量(基本单位)"),
            _f("FQty", DECIMAL, "库存量(库存单位)"), _f("FBaseLockQty", DECIMAL, "锁库量(基本单位)"),
            _f("FLockQty", DECIMAL, "锁库量"), _f("FAVBQty", DECIMAL, "可用量"),
            _f("FBaseAVBQty", DECIMAL, "可用量(基本单位)"), _f("FProduceDate", DATE, "生产日期"),
            _f("FExpiryDate", DATE, "有效期至"), _f("FUpdateTime", DATE, "最后更新日期"),
        ]),
        _bill("STK_InStock", "采购入库单", "FInStockEntry", "RKD01_SYS", "CGRK", [
            _f("FPurchaseOrgId", REF, "采购组织", ORG), _f("FSupplierId", REF, "供应商", SUPPLIER),
        ], "FRealQty", "FBaseUnitQty", +1, partner="FSupplierId",
            extra=(_f("FMustQty", DECIMAL, "应收数量", default=0), _f("FSRCBillNo", TEXT, "源单编号", default=""),
                   _f("FPOOrderNo", TEXT, "订单单号", default=""))),
        _bill("SAL_OUTSTOCK", "销售出库单", "FEntity", "XSCKD01_SYS", "XSCKD", [
            _f("FCustomerID", REF, "客户", CUSTOMER), _f("FSaleOrgId", REF, "销售组织", ORG),
        ], "FRealQty", "FBaseUnitQty", -1, partner="FCustomerID", material="FMaterialID", stock="FStockID",
            location="FStockLocID", status="FStockStatusID",
            extra=(_f("FMustQty", DECIMAL, "应发数量", default=0), _f("FIsFree", BOOL, "是否赠品", default=False),
                   _f("FAuxPropID", INT, "辅助属性", default=0), _f("FSrcBillNo", TEXT, "源单编号", default=""))),
        _bill("SAL_RETURNSTOCK", "销售退货单", "FEntity", "XSTHD01_SYS", "XSTHD", [
            _f("FRetcustId", REF, "退货客户", CUSTOMER), _f("FSaleOrgId", REF, "销售组织", ORG),
        ], "FRealQty", "FBaseUnitQty", +1, partner="FRetcustId",
            extra=(_f("FMustQty", DECIMAL, "应退数量", default=0), _f("FSrcBillNo", TEXT, "源单编号", default=""))),
        _bill("PUR_MRB", "采购退料单", "FPURMRBENTRY", "TLD01_SYS", "CGTL", [
            _f("FSupplierID", REF, "供应商", SUPPLIER), _f("FPurchaseOrgId", REF, "采购组织", ORG),
        ], "FRMREALQTY", "FBaseUnitQty", -1, partner="FSupplierID", material="FMATERIALID"),
        _bill("STK_MISCELLANEOUS", "其他入库单", "FEntity", "QTRKD01_SYS", "QTRK", [
            _f("FStockDirect", ENUM, "库存方向", default="GENERAL"),
        ], "FQty", "FBaseQty", +1, direction="FStockDirect"),
        _bill("STK_MisDelivery", "其他出库单", "FEntity", "QTCKD01_SYS", "QTCK", [
            _f("FStockDirect", ENUM, "库存方向", default="GENERAL"),
        ], "FQty", "FBaseQty", -1, direction="FStockDirect"),
        _bill("STK_StockCountGain", "盘盈单", "FBillEntry", "PY01_SYS", "PY", [],
              "FGainQty", "FBaseGainQty", +1,
              extra=(_f("FAcctQty", DECIMAL, "账存数量", default=0), _f("FCountQty", DECIMAL, "盘点数量", default=0))),
        _bill("STK_StockCountLoss", "盘亏单", "FBillEntry", "PK01_SYS", "PK", [],
              "FLossQty", "FBaseLossQty", -1,
              extra=(_f("FAcctQty", DECIMAL, "账存数量", default=0), _f("FCountQty", DECIMAL, "盘点数量", default=0))),
    ]
    transfer_entry = [
        _f("FMaterialId", REF, "物料编码", MATERIAL), _f("FDestMaterialId", REF, "调入物料", MATERIAL),
        _f("FUnitID", REF, "单位", UNIT), _f("FBaseUnitID", REF, "基本单位", UNIT),
        _f("FQty", DECIMAL, "调拨数量", default=0), _f("FBaseQty", DECIMAL, "基本单位数量", default=0),
        _f("FSrcStockId", REF, "调出仓库", STOCK), _f("FDestStockId", REF, "调入仓库", STOCK),
        _f("FSrcStockLocId", REF, "调出仓位", LOCATION), _f("FDestStockLocId", REF, "调入仓位", LOCATION),
        _f("FLot", REF, "调出批号", LOT), _f("FDestLot", REF, "调入批号", LOT),
        _f("FSrcStockStatusId", REF, "调出库存状态", STATUS), _f("FDestStockStatusId", REF, "调入库存状态", STATUS),
        _f("FStockOutFlag", BOOL, "出库标志", default=False), _f("FStockInFlag", BOOL, "入库标志", default=False),
        _f("FStockFlag", BOOL, "库存更新标志", default=False), _f("FEntryNote", TEXT, "备注", default=""),
    ]
    forms.append(Form(
        "STK_TransferDirect", "直接调拨单", "FID", "bill", _bill_head([
            _f("FStockOutOrgId", REF, "调出库存组织", ORG), _f("FTransferDirect", ENUM, "调拨方向", default="GENERAL"),
            _f("FTransferBizType", ENUM, "调拨类型", default="InnerOrgTransfer"), _f("FBizType", ENUM, "业务类型", default="NORMAL"),
        ]), "FBillEntry", transfer_entry, bill_type="ZJDB01_SYS", prefix="ZJDB", qty="FQty", base_qty="FBaseQty",
        direction_field="FTransferDirect",
        movements=(Movement(-1, "FMaterialId", "FSrcStockId", "FSrcStockLocId", "FLot"),
                   Movement(+1, "FDestMaterialId", "FDestStockId", "FDestStockLocId", "FDestLot"))))
    return {form.form_id.lower(): form for form in forms}
