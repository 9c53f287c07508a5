"""The SAP B1 entity sets the simulator serves: keys, object codes, line collections, stamps.

Vendor-doc facts (``vendors/sap_b1.md`` §3) live here as data, so the company state
(:mod:`sandbox.sap_b1_company`) and both front ends (the Service Layer in :mod:`sandbox.sap_b1`, a
DI Server later) read the same table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.sap_b1_templates import (
    INTRASTAT_TEMPLATE,
    ITEM_PRICE_TEMPLATE,
    ITEM_TEMPLATE,
    ITEM_WAREHOUSE_TEMPLATE,
)

__all__ = [
    "INTRASTAT_TEMPLATE", "ITEM_PRICE_TEMPLATE", "ITEM_TEMPLATE", "ITEM_WAREHOUSE_TEMPLATE",
    "ENTITY_SETS", "EntitySet", "ENUM_ALIASES", "DATE_FIELDS", "TIME_FIELDS",
]

StockEffect = Literal["in", "out", "transfer", "count", "post", "none"]


@dataclass(frozen=True)
class EntitySet:
    """One entity set. ``stamps`` names the creation/modification fields the real entity has:
    ``create_date``/``create_time``/``update_date``/``update_time`` → property name (absent = the
    entity lacks it)."""

    name: str
    type_name: str                     # OData type, used in "Property 'X' of 'Document' is invalid"
    key: str
    key_type: type
    kind: Literal["master", "document"]
    template: dict[str, Any]
    object_code: str | None = None     # ObjType ("59"), DocObjectCode ("oInventoryGenEntry")
    di_object: str | None = None
    lines: str | None = None           # line collection property
    line_key: str = "LineNum"
    line_base: int = 0                 # first line number
    line_template: dict[str, Any] = field(default_factory=dict)
    line_table: str | None = None      # "IGE1": prefix in "[IGE1.ItemCode][line: 1]"
    header_table: str | None = None    # "OIGE"
    number: str | None = None          # visible number property (DocNum / DocumentNumber)
    effect: StockEffect = "none"
    partner: Literal["supplier", "customer"] | None = None
    stamps: dict[str, str] = field(default_factory=dict)
    editable: frozenset[str] = frozenset()   # header fields a PATCH may change on a posted document
    actions: frozenset[str] = frozenset()    # POST Entity(n)/<Action>


_DOC_STAMPS = {"create_date": "CreationDate", "update_date": "UpdateDate", "update_time": "UpdateTime",
               "create_time": "DocTime"}
_MASTER_STAMPS = {"create_date": "CreateDate", "create_time": "CreateTime", "update_date": "UpdateDate",
                  "update_time": "UpdateTime"}
_DOC_EDITABLE = frozenset({"Comments", "Reference2", "NumAtCard", "JournalMemo", "DocDueDate", "TaxDate"})

WAREHOUSE_TEMPLATE: dict[str, Any] = {
    "WarehouseCode": None, "WarehouseName": None, "Street": None, "Block": None, "ZipCode": None, "City": None,
    "County": None, "Country": None, "State": None, "Location": None, "Nettable": "tYES",
    "DropShip": "tNO", "Inactive": "tNO", "BusinessPlaceID": None, "BuildingFloorRoom": None,
    "EnableBinLocations": "tNO", "DefaultBin": None, "DefaultBinEnforced": "tNO",
    "AutoAllocOnReceipt": "tNO", "ReceivingBinLocationsBy": "rblbBinCodeAscending",
    "ExcludeAutoAllocOnIssue": "tNO", "WarehouseBinLocations": [],
}

BIN_TEMPLATE: dict[str, Any] = {
    "AbsEntry": None, "Warehouse": None, "Sublevel1": None, "Sublevel2": None, "Sublevel3": None,
    "Sublevel4": None, "BinCode": None, "Inactive": "tNO", "Description": None, "AlternativeSortCode": None,
    "BarCode": None, "Attribute1": None, "RestrictedItemType": "briNone", "SpecificItem": None,
    "MinimumQty": 0.0, "MaximumQty": 0.0, "IsSystemBin": "tNO", "ReceivingBinLocation": "tNO",
    "ExcludeAutoAllocOnIssue": "tNO",
}

PARTNER_TEMPLATE: dict[str, Any] = {
    "CardCode": None, "CardName": None, "CardType": "cCustomer", "GroupCode": 100, "Address": None,
    "ZipCode": None, "MailAddress": None, "Phone1": None, "ContactPerson": None, "FederalTaxID": None,
    "Currency": "##", "Valid": "tYES", "Frozen": "tNO", "CardForeignName": None, "EmailAddress": None,
    "DefaultWarehouse": None, "CreateDate": None, "CreateTime": None, "UpdateDate": None, "UpdateTime": None,
    "BPAddresses": [], "ContactEmployees": [],
}

DOCUMENT_TEMPLATE: dict[str, Any] = {
    "DocEntry": None, "DocNum": None, "DocType": "dDocument_Items", "HandWritten": "tNO", "Printed": "psNo",
    "DocDate": None, "DocDueDate": None, "CardCode": None, "CardName": None, "Address": None,
    "NumAtCard": None, "DocTotal": 0.0, "DocCurrency": None, "DocRate": 1.0, "Reference1": None,
    "Reference2": None, "Comments": None, "JournalMemo": None, "Series": None, "TaxDate": None,
    "DocObjectCode": None, "DocumentStatus": "bost_Open", "Cancelled": "tNO", "CancelStatus": "csNo",
    "CreationDate": None, "UpdateDate": None, "UpdateTime": None, "DocTime": None, "BPL_IDAssignedToInvoice": None,
    "SalesPersonCode": -1, "DocumentLines": [],
}

DOCUMENT_LINE_TEMPLATE: dict[str, Any] = {
    "LineNum": None, "ItemCode": None, "ItemDescription": None, "Quantity": 0.0, "Price": 0.0,
    "UnitPrice": 0.0, "Currency": None, "WarehouseCode": None, "AccountCode": None, "CostingCode": None,
    "ProjectCode": None, "UoMEntry": -1, "UoMCode": "Manual", "InventoryQuantity": 0.0, "LineStatus": "bost_Open",
    "RemainingOpenQuantity": 0.0, "LineTotal": 0.0, "BaseType": -1, "BaseEntry": None, "BaseLine": None,
    "FreeText": None, "BatchNumbers": [], "SerialNumbers": [], "DocumentLinesBinAllocations": [],
}

STOCK_TRANSFER_TEMPLATE: dict[str, Any] = {
    "DocEntry": None, "Series": None, "Printed": "tNO", "DocDate": None, "DueDate": None, "CardCode": None,
    "CardName": None, "Address": None, "Reference1": None, "Reference2": None, "Comments": None,
    "JournalMemo": None, "PriceList": -1, "SalesPersonCode": -1, "FromWarehouse": None, "ToWarehouse": None,
    "CreationDate": None, "UpdateDate": None, "TaxDate": None, "DocNum": None, "DocObjectCode": None,
    "DocumentStatus": "bost_Open", "Cancelled": "tNO", "StockTransferLines": [],
}

STOCK_TRANSFER_LINE_TEMPLATE: dict[str, Any] = {
    "LineNum": None, "DocEntry": None, "ItemCode": None, "ItemDescription": None, "Quantity": 0.0,
    "Price": 0.0, "Currency": None, "UnitPrice": 0.0, "ProjectCode": None, "FromWarehouseCode": None,
    "WarehouseCode": None, "UoMEntry": -1, "UoMCode": "Manual", "InventoryQuantity": 0.0,
    "RemainingOpenQuantity": 0.0, "LineStatus": "bost_Open", "BatchNumbers": [], "SerialNumbers": [],
    "StockTransferLinesBinAllocations": [],
}

COUNTING_TEMPLATE: dict[str, Any] = {
    "DocumentEntry": None, "DocumentNumber": None, "Series": None, "CountDate": None, "CountTime": None,
    "SingleCounterType": "ctUser", "SingleCounterID": 1, "DocumentStatus": "cdsOpen", "Remarks": None,
    "Reference2": None, "BranchID": None, "DocObjectCodeEx": None, "FinancialPeriod": None,
    "PeriodIndicator": "Default", "CountingType": "ctSingleCounter", "YearEndDate": None,
    "InventoryCountingLines": [],
}

COUNTING_LINE_TEMPLATE: dict[str, Any] = {
    "DocumentEntry": None, "LineNumber": None, "ItemCode": None, "ItemDescription": None, "Freeze": "tNO",
    "WarehouseCode": None, "BinEntry": None, "InWarehouseQuantity": 0.0, "Counted": "tNO",
    "UoMCode": "Manual", "BarCode": None, "UoMCountedQuantity": 0.0, "ItemsPerUnit": 1.0,
    "CountedQuantity": 0.0, "Variance": 0.0, "VariancePercentage": 0.0, "VisualOrder": None,
    "TargetEntry": None, "TargetLine": None, "TargetType": -1, "TargetReference": None, "ProjectCode": None,
    "Manufacturer": -1, "SupplierCatalogNo": None, "PreferredVendor": None, "CostingCode": None,
    "Remarks": None, "LineStatus": "clsOpen", "CounterType": "ctUser", "CounterID": 1, "MultipleCounterRole": "mcrIndividualCounter",
    "InventoryCountingBatchNumbers": [], "InventoryCountingSerialNumbers": [],
}

POSTING_TEMPLATE: dict[str, Any] = {
    "DocumentEntry": None, "DocumentNumber": None, "Series": None, "CountDate": None, "CountTime": None,
    "PostingDate": None, "Remarks": None, "Reference2": None, "JournalRemark": None, "BranchID": None,
    "PriceSource": "ipsByItemCost", "PriceList": None, "DocObjectCodeEx": None, "DocumentStatus": "bost_Close",
    "InventoryPostingLines": [],
}

POSTING_LINE_TEMPLATE: dict[str, Any] = {
    "DocumentEntry": None, "LineNumber": None, "ItemCode": None, "ItemDescription": None, "WarehouseCode": None,
    "BinEntry": None, "InWarehouseQuantity": 0.0, "CountedQuantity": 0.0, "Variance": 0.0, "Price": 0.0,
    "Currency": None, "BaseEntry": None, "BaseLine": None, "BaseType": -1, "BaseReference": None,
    "UoMCode": "Manual", "UoMCountedQuantity": 0.0, "ItemsPerUnit": 1.0, "ProjectCode": None,
    "Remarks": None, "InventoryPostingBatchNumbers": [], "InventoryPostingSerialNumbers": [],
}


def _document(name: str, code: str, di: str, header: str, line: str, effect: StockEffect,
              partner: Literal["supplier", "customer"] | None = None) -> EntitySet:
    return EntitySet(
        name, "Document", "DocEntry", int, "document", DOCUMENT_TEMPLATE, object_code=code, di_object=di,
        lines="DocumentLines", line_template=DOCUMENT_LINE_TEMPLATE, line_table=line, header_table=header,
        number="DocNum", effect=effect, partner=partner, stamps=_DOC_STAMPS, editable=_DOC_EDITABLE,
        actions=frozenset({"Cancel", "Close"}),
    )


ENTITY_SETS: dict[str, EntitySet] = {e.name: e for e in [
    EntitySet("Items", "Item", "ItemCode", str, "master", ITEM_TEMPLATE, object_code="4", di_object="oItems",
              stamps=_MASTER_STAMPS),
    EntitySet("Warehouses", "Warehouse", "WarehouseCode", str, "master", WAREHOUSE_TEMPLATE, object_code="64",
              di_object="oWarehouses"),
    EntitySet("BinLocations", "BinLocation", "AbsEntry", int, "master", BIN_TEMPLATE, di_object="oBinLocations"),
    EntitySet("BusinessPartners", "BusinessPartner", "CardCode", str, "master", PARTNER_TEMPLATE, object_code="2",
              di_object="oBusinessPartners", stamps=_MASTER_STAMPS),
    _document("InventoryGenEntries", "59", "oInventoryGenEntry", "OIGN", "IGN1", "in"),
    _document("InventoryGenExits", "60", "oInventoryGenExit", "OIGE", "IGE1", "out"),
    _document("PurchaseDeliveryNotes", "20", "oPurchaseDeliveryNotes", "OPDN", "PDN1", "in", "supplier"),
    _document("DeliveryNotes", "15", "oDeliveryNotes", "ODLN", "DLN1", "out", "customer"),
    _document("Returns", "16", "oReturns", "ORDN", "RDN1", "in", "customer"),
    _document("PurchaseReturns", "21", "oPurchaseReturns", "ORPD", "RPD1", "out", "supplier"),
    EntitySet("StockTransfers", "StockTransfer", "DocEntry", int, "document", STOCK_TRANSFER_TEMPLATE,
              object_code="67", di_object="oStockTransfer", lines="StockTransferLines",
              line_template=STOCK_TRANSFER_LINE_TEMPLATE, line_table="WTR1", header_table="OWTR", number="DocNum",
              effect="transfer", stamps={"create_date": "CreationDate", "update_date": "UpdateDate"},
              editable=frozenset({"Comments", "Reference2", "JournalMemo", "DueDate"}),
              actions=frozenset({"Cancel", "Close"})),
    EntitySet("InventoryCountings", "InventoryCounting", "DocumentEntry", int, "document", COUNTING_TEMPLATE,
              object_code="1470000065", di_object="oInventoryCounting", lines="InventoryCountingLines",
              line_key="LineNumber", line_base=1, line_template=COUNTING_LINE_TEMPLATE, line_table="INC1",
              header_table="OINC", number="DocumentNumber", effect="count",
              stamps={"create_date": "CountDate", "create_time": "CountTime"},
              editable=frozenset({"Remarks", "Reference2"}), actions=frozenset({"Close"})),
    EntitySet("InventoryPostings", "InventoryPosting", "DocumentEntry", int, "document", POSTING_TEMPLATE,
              object_code="10000071", di_object="oInventoryPosting", lines="InventoryPostingLines",
              line_key="LineNumber", line_base=1, line_template=POSTING_LINE_TEMPLATE, line_table="IQR1",
              header_table="OIQR", number="DocumentNumber", effect="post",
              stamps={"create_date": "PostingDate"}, editable=frozenset({"Remarks", "Reference2", "JournalRemark"})),
]}

# Properties holding a date: rendered "2024-05-01" on v1, "2024-05-01T00:00:00Z" on v2.
DATE_FIELDS = frozenset({
    "DocDate", "DocDueDate", "TaxDate", "DueDate", "CreationDate", "UpdateDate", "CreateDate", "CountDate",
    "PostingDate", "ValidFrom", "ValidTo", "FrozenFrom", "FrozenTo", "ExpiryDate", "ManufacturingDate",
    "AddmisionDate", "CapitalizationDate", "YearEndDate",
})
# Properties holding a time of day, rendered "HH:MM:SS".
TIME_FIELDS = frozenset({"UpdateTime", "CreateTime", "DocTime", "CountTime"})

# Enum properties: value code → name. Input and $filter accept either (doc §2.3).
_YES_NO = {"Y": "tYES", "N": "tNO"}
ENUM_ALIASES: dict[str, dict[str, str]] = {
    "CardType": {"C": "cCustomer", "S": "cSupplier", "L": "cLid"},
    "DocumentStatus": {"O": "bost_Open", "C": "bost_Close"},
    "LineStatus": {"O": "bost_Open", "C": "bost_Close"},
    "ItemType": {"I": "itItems", "L": "itLabor", "T": "itTravel", "F": "itFixedAssets"},
    "BinActionType": {"1": "batToWarehouse", "2": "batFromWarehouse"},
}
for _name in ("InventoryItem", "SalesItem", "PurchaseItem", "ManageBatchNumbers", "ManageSerialNumbers",
              "Valid", "Frozen", "Cancelled", "EnableBinLocations", "Inactive", "Locked", "VatLiable",
              "ManageStockByWarehouse", "DefaultBinEnforced", "WasCounted", "Counted", "Freeze", "DropShip",
              "Nettable", "HandWritten", "AllowNegativeQuantity"):
    ENUM_ALIASES[_name] = _YES_NO
