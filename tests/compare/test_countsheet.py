"""compare.countsheet: CSV and Excel count sheets, every bad row reported on its line, and a
reconciliation of a count sheet against stored system snapshots."""
from __future__ import annotations

from decimal import Decimal as D

from openpyxl import Workbook

from compare.countsheet import read_count_sheet
from compare.snapshots import store_rows
from compare.variance import VarianceClass, reconcile_snapshots
from sync.store import Item
from tests.sync.conftest import store  # noqa: F401 - fixture

HEADER = ["物料编码", "仓库", "库位", "批号", "实盘数量", "单位"]
ROWS = [
    ["TS-001", "WH01", "", "", "98", "PCS"],      # line 2: good
    ["NOPE-9", "WH01", "", "", "1", "PCS"],       # line 3: unknown item
    ["TS-002", "WH01", "", "", "abc", "PCS"],     # line 4: non-numeric quantity
    ["TS-001", "WH01", "", "", "97", "PCS"],      # line 5: duplicate of line 2
    ["TS-002", "WH01", "", "", "2", "FURLONG"],   # line 6: unknown unit
    ["TS-002", "WH01", "", "", "1", "BOX"],       # line 7: no conversion for BOX
    ["RICE-5", "WH01", "", "", "12.5", ""],       # line 8: good, base unit KG from the item
]


def seed_items(store):
    with store.session() as s:
        for sku, base in (("TS-001", "PCS"), ("TS-002", "PCS"), ("RICE-5", "KG")):
            s.add(Item(sku=sku, content_hash=sku, payload={"sku": sku, "name": sku, "base_unit": base,
                                                          "conversions": []}))


def write_csv(path, rows):
    path.write_text("\n".join(",".join(r) for r in [HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def write_xlsx(path, rows):
    book = Workbook()
    sheet = book.active
    sheet.append(["盘点表 2024-05"])  # a title row above the header
    sheet.append(HEADER)
    for row in rows:
        sheet.append([float(c) if c.replace(".", "", 1).isdigit() and i == 4 else (c or None)
                      for i, c in enumerate(row)])
    book.save(path)
    return path


def problems_by_line(sheet):
    out = {}
    for p in sheet.problems:
        out.setdefault(p.line, []).append(f"{p.field}: {p.message}" if p.field else p.message)
    return out


def test_a_csv_count_sheet_reports_every_bad_row_with_its_line(store, tmp_path):
    # Given a count sheet with Chinese headers and five bad rows among seven
    seed_items(store)
    sheet = read_count_sheet(write_csv(tmp_path / "count.csv", ROWS), store=store)
    # Then each bad row is named on its line and the two good rows are kept
    lines = problems_by_line(sheet)
    assert sorted(lines) == [3, 4, 5, 6, 7]
    assert "unknown item 'NOPE-9'" in lines[3][0]
    assert lines[4] == ["counted: 'abc' is not a number"]
    assert "duplicate row: TS-001 in WH01 is already counted on line 2" in lines[5][0]
    assert "unknown unit 'FURLONG'" in lines[6][0]
    assert "no conversion for BOX" in lines[7][0]
    assert [(r.line, r.sku, r.counted, r.unit) for r in sheet.rows] == [(2, "TS-001", 98, "PCS"),
                                                                       (8, "RICE-5", D("12.5"), "KG")]
    assert sheet.lines_read == 7 and len(sheet.rows) + len(lines) == 7  # none silently dropped
    assert str(sheet.problems[0]).startswith("line 3: sku: unknown item")


def test_an_excel_count_sheet_names_worksheet_rows(store, tmp_path):
    seed_items(store)
    sheet = read_count_sheet(write_xlsx(tmp_path / "count.xlsx", ROWS), store=store)
    # the title is row 1 and the header row 2, so the data rows are 3..9
    lines = problems_by_line(sheet)
    assert sorted(lines) == [4, 5, 6, 7, 8]
    assert "unknown item" in lines[4][0] and "not a number" in lines[5][0] and "duplicate row" in lines[6][0]
    assert "already counted on line 3" in lines[6][0]
    assert [(r.line, r.sku, r.counted) for r in sheet.rows] == [(3, "TS-001", 98), (9, "RICE-5", D("12.5"))]


def test_missing_columns_and_values_are_problems(store, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sku,warehouse\nTS-001,WH01\n", encoding="utf-8")
    assert [str(p) for p in read_count_sheet(path, store=store).problems] == [
        "line 1: counted: required column is missing"]
    path.write_text("sku,warehouse,counted\n,WH01,3\nTS-001,WH01,-1\n", encoding="utf-8")
    seed_items(store)
    found = [str(p) for p in read_count_sheet(path, store=store).problems]
    assert found == ["line 2: sku: is required", "line 3: counted: -1 is negative; a count is 0 or more"]


def test_a_count_sheet_reconciled_against_a_system_snapshot(store, tmp_path):
    # Given a system snapshot and a clean count sheet stored as a snapshot (the reference side)
    seed_items(store)
    system = store_rows(store, [dict(sku="TS-001", warehouse="WH01", on_hand=D(100), unit="PCS"),
                                dict(sku="RICE-5", warehouse="WH01", on_hand=D("12.5"), unit="KG"),
                                dict(sku="TS-002", warehouse="WH02", on_hand=D(1), unit="PCS")], source_label="erp")
    sheet = read_count_sheet(write_csv(tmp_path / "c.csv", [ROWS[0], ROWS[6]]), store=store)
    assert sheet.ok
    counted = store_rows(store, sheet.balance_rows(), source_label="count sheet c.csv")
    # When reconciled over the warehouses the sheet covers
    result = reconcile_snapshots(store, [counted, system], warehouses=sheet.warehouses)
    # Then the 2-piece loss shows, and WH02 (not counted) is out of scope
    assert result.total_rows == 2 and result.counts[VarianceClass.QUANTITY_MISMATCH] == 1
    assert result.match_rate == 0.5 and result.reference_side.label == "count sheet c.csv"
