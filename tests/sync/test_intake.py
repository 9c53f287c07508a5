"""sync.intake: movements from CSV, XLSX and JSON files, every problem on its line."""
from __future__ import annotations

import io
import json
import zipfile
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook

from canonical import MovementKind, PartnerRole
from sync.intake import IntakeProblem, read_csv, read_json, read_movements, read_xlsx

HEADER = "reference,kind,document_date,counterparty_code,counterparty_name,sku,quantity,unit,to_warehouse,lot"
GOOD = [
    "PO-1,purchase_receipt,2024-05-01,S01,Acme,SKU-1,10,PCS,WH1,",
    "PO-1,purchase_receipt,2024-05-01,S01,Acme,SKU-2,2.5,KG,WH1,L7",
    "PO-2,purchase_receipt,2024-05-02,S01,Acme,SKU-1,3,PCS,WH2,",
]


def csv_bytes(*rows: str, header: str = HEADER, encoding: str = "utf-8") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode(encoding)


def problems(result) -> list[str]:
    return [str(p) for p in result.problems]


# ---------------------------------------------------------------------------------- happy paths


def test_csv_rows_with_one_reference_form_one_movement():
    # Given three rows, two of them for PO-1
    result = read_csv(csv_bytes(*GOOD))
    # Then two movements, lines numbered in file order, nothing wrong
    assert result.ok and result.lines_read == 3 and result.accepted == 2
    po1, po2 = result.movements
    assert po1.reference == "PO-1" and po1.kind is MovementKind.purchase_receipt
    assert po1.document_date == date(2024, 5, 1)
    assert [(ln.line_no, ln.sku, ln.quantity, ln.unit, ln.lot) for ln in po1.lines] == [
        (1, "SKU-1", Decimal("10"), "PCS", None), (2, "SKU-2", Decimal("2.5"), "KG", "L7")]
    assert po1.counterparty.code == "S01" and po1.counterparty.role is PartnerRole.supplier  # derived from kind
    assert po2.lines[0].to_warehouse == "WH2"
    assert result.lines == {"PO-1": (2, 3), "PO-2": (4,)}
    assert result.encoding == "utf-8" and result.encoding_note is None


def test_csv_chinese_headers_kinds_and_one_warehouse_column():
    # Given an export from a Chinese ERP: 单号/类型/日期/物料编码/数量/单位/仓库
    data = csv_bytes("SO-1,销售出库,2024年5月3日,C01,客户甲,SKU-1,4,pcs,WH1",
                     header="单号,类型,日期,往来单位编码,往来单位名称,物料编码,数量,单位,仓库")
    result = read_csv(data)
    assert result.ok, problems(result)
    (movement,) = result.movements
    # Then 仓库 is the side a sales issue takes stock from, and the customer role comes from the kind
    assert movement.kind is MovementKind.sales_issue
    assert movement.lines[0].from_warehouse == "WH1" and movement.lines[0].to_warehouse is None
    assert movement.counterparty.role is PartnerRole.customer


def test_header_names_ignore_case_spaces_and_underscores():
    header = "Reference,KIND,Document Date,Counterparty-Code,counterparty name,SKU,Qty,UOM,To_Warehouse,lot"
    result = read_csv(csv_bytes(GOOD[0], header=header))
    assert result.ok, problems(result)


def test_transfer_with_both_sides_and_bins():
    header = "reference,kind,document_date,sku,quantity,unit,from_warehouse,from_bin,to_warehouse,to_bin"
    result = read_csv(csv_bytes("TR-1,transfer,2024-05-01,SKU-1,1,PCS,WH1,A-01,WH1,B-02", header=header))
    assert result.ok, problems(result)
    line = result.movements[0].lines[0]
    assert (line.from_warehouse, line.from_bin, line.to_warehouse, line.to_bin) == ("WH1", "A-01", "WH1", "B-02")


def test_naive_posting_times_are_read_in_the_declared_zone_and_counted():
    header = HEADER + ",posted_at"
    data = csv_bytes(GOOD[0] + ",2024-05-01 10:30", GOOD[2] + ",2024-05-02T09:00:00+00:00", header=header)
    # When read with the declared zone
    result = read_csv(data, timezone="Asia/Shanghai")
    assert result.ok, problems(result)
    po1, po2 = result.movements
    # Then the naive time is in Shanghai, the explicit one is kept, and the caller learns one was naive
    assert po1.posted_at.utcoffset() == timedelta(hours=8) and po1.posted_at.hour == 10
    assert po2.posted_at == datetime(2024, 5, 2, 9, tzinfo=timezone.utc)
    assert result.naive_times == 1 and result.timezone == "Asia/Shanghai"


def test_a_blank_header_cell_means_the_same_as_the_other_rows():
    # Given PO-1's second row with kind, date and counterparty left blank (merged cells in a sheet)
    result = read_csv(csv_bytes(GOOD[0], "PO-1,,,,,SKU-2,1,PCS,WH1,"))
    assert result.ok, problems(result)
    assert len(result.movements[0].lines) == 2


def test_a_title_row_above_the_header_is_skipped():
    result = read_csv(csv_bytes(*GOOD, header="采购入库单导入,,,\n" + HEADER))
    assert result.ok, problems(result)
    assert result.lines == {"PO-1": (3, 4), "PO-2": (5,)}
    assert (result.header_line, result.skipped_above_header) == (2, 1)


def test_tab_separated_text_and_quoted_multiline_cells_keep_physical_line_numbers():
    header = HEADER + ",memo"
    data = ('\t'.join(header.split(",")) + "\n"
            + '\t'.join((GOOD[0] + ',"two\nlines"').split(",")) + "\n"
            + '\t'.join(GOOD[2].replace("3,PCS", "0,PCS").split(",")) + "\t\n").encode()
    result = read_csv(data)
    assert problems(result) == ["line 4: quantity: must be greater than zero"]
    assert result.movements[0].memo == "two\nlines"


# ---------------------------------------------------------------------------------- encodings


def test_utf8_with_bom():
    data = b"\xef\xbb\xbf" + csv_bytes(*GOOD, header=HEADER.replace("reference", "单号"))
    result = read_csv(data)
    assert result.ok, problems(result)
    assert result.encoding == "utf-8-sig"


def test_gb18030_is_used_only_when_utf8_fails_and_the_result_says_so():
    # Given a file saved by Chinese Excel as "CSV" (GB18030), with Chinese headers and a Chinese name
    data = csv_bytes("PO-1,采购入库,2024-05-01,S01,上海某某有限公司,SKU-1,1,PCS,仓库一",
                     header="单号,类型,日期,往来单位编码,往来单位名称,物料编码,数量,单位,仓库", encoding="gb18030")
    result = read_csv(data)
    assert result.ok, problems(result)
    assert result.encoding == "gb18030"
    assert result.encoding_note.startswith("not valid UTF-8 (line 1,") and "read as GB18030" in result.encoding_note
    assert result.movements[0].counterparty.name == "上海某某有限公司"
    assert result.movements[0].lines[0].to_warehouse == "仓库一"


def test_utf8_text_that_would_also_decode_as_gb18030_is_read_as_utf8():
    data = csv_bytes("PO-1,采购入库,2024-05-01,S01,上海公司,SKU-1,1,PCS,WH1",
                     header="单号,类型,日期,往来单位编码,往来单位名称,物料编码,数量,单位,仓库")
    result = read_csv(data)
    assert result.encoding == "utf-8" and result.movements[0].counterparty.name == "上海公司"


def test_utf16_with_bom():
    data = ("\n".join([HEADER, GOOD[0]]) + "\n").encode("utf-16")
    result = read_csv(data)
    assert result.ok and result.encoding == "utf-16"


# ---------------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(("row", "expected"), [
    ("PO-9,teleport,2024-05-01,S01,Acme,SKU-1,1,PCS,WH1,", "line 2: kind: unknown kind 'teleport'"),
    ("PO-9,purchase_receipt,2024-05-01,S01,Acme,SKU-1,ten,PCS,WH1,",
     "line 2: quantity: must be a number (got 'ten')"),
    ("PO-9,purchase_receipt,2024-05-01,S01,Acme,SKU-1,1,PCS,WH1,", None),
    ("PO-9,purchase_receipt,01/05/2024,S01,Acme,SKU-1,1,PCS,WH1,", "line 2: document_date: '01/05/2024' is not a date"),
    ("PO-9,purchase_receipt,2024-02-30,S01,Acme,SKU-1,1,PCS,WH1,", "line 2: document_date: '2024-02-30' is not a date"),
    ("PO-9,purchase_receipt,2024-05-01,S01,Acme,,1,PCS,WH1,", "line 2: sku: is required"),
    ("PO-9,purchase_receipt,2024-05-01,S01,Acme,SKU-1,-1,PCS,WH1,", "line 2: quantity: must be greater than zero"),
    ("PO-9,purchase_receipt,2024-05-01,S01,Acme,SKU-1,1,BOXES,WH1,", "line 2: unit: unknown unit 'BOXES'"),
    ("PO-9,purchase_receipt,2024-05-01,S01,Acme,SKU-1,1.5,PCS,WH1,",
     "line 2: quantity: has 1 decimal place but unit 'PCS' allows none"),
    ("PO-9,purchase_receipt,2024-05-01,,,SKU-1,1,PCS,WH1,", "line 2: counterparty_code: a purchase_receipt needs a supplier"),
    ("PO-9,purchase_receipt,2024-05-01,S01,,SKU-1,1,PCS,WH1,", "line 2: counterparty_name: is required with"),
    (",purchase_receipt,2024-05-01,S01,Acme,SKU-1,1,PCS,WH1,", "line 2: reference: is required"),
])
def test_each_bad_row_class_is_reported_on_its_line(row, expected):
    # Given a good row (line 2 or 3) and the row under test
    result = read_csv(csv_bytes(row, GOOD[2]))
    if expected is None:
        assert result.ok
        return
    # Then the problem names its line and field, and the good movement is still read
    assert any(p.startswith(expected) for p in problems(result)), problems(result)
    assert [m.reference for m in result.movements] == ["PO-2"]


def test_naive_time_without_a_zone_is_a_problem():
    data = csv_bytes(GOOD[0] + ",2024-05-01 10:30", GOOD[2] + ",", header=HEADER + ",posted_at")
    result = read_csv(data, timezone=None)
    assert problems(result)[0].startswith("line 2: posted_at: 2024-05-01 10:30:00 has no UTC offset")
    assert [m.reference for m in result.movements] == ["PO-2"]


def test_transfer_into_its_own_warehouse_is_the_canonical_rule():
    header = "reference,kind,document_date,sku,quantity,unit,from_warehouse,to_warehouse"
    result = read_csv(csv_bytes("TR-1,transfer,2024-05-01,SKU-1,1,PCS,WH1,WH1", header=header))
    (problem,) = result.problems
    assert (problem.line, problem.field) == (2, "to_warehouse")
    assert problem.message.startswith("transfer into its own warehouse 'WH1'")


def test_a_transfer_cannot_use_the_one_warehouse_column():
    header = "reference,kind,document_date,sku,quantity,unit,仓库"
    result = read_csv(csv_bytes("TR-1,调拨,2024-05-01,SKU-1,1,PCS,WH1", header=header))
    assert problems(result)[0] == "line 2: warehouse: a transfer needs from_warehouse and to_warehouse columns, not warehouse"


def test_header_fields_that_disagree_name_both_lines_and_reject_the_movement_whole():
    # Given PO-1 whose second row has another date
    result = read_csv(csv_bytes(GOOD[0], GOOD[1].replace("2024-05-01", "2024-05-03"), GOOD[2]))
    # Then the later row names the earlier one, and the first row is named as rejected with it
    assert problems(result) == [
        "line 2: rejected with movement 'PO-1' (see line 3)",
        "line 3: document_date: '2024-05-03' disagrees with line 2 ('2024-05-01') for reference 'PO-1'",
    ]
    assert [m.reference for m in result.movements] == ["PO-2"]
    assert result.rejected == ("PO-1",) and result.rows_rejected == 2


def test_kind_disagreement_across_rows():
    result = read_csv(csv_bytes(GOOD[0], GOOD[1].replace("purchase_receipt", "sales_return")))
    assert "line 3: kind: 'sales_return' disagrees with line 2 ('purchase_receipt') for reference 'PO-1'" in problems(result)


def test_a_duplicate_line_within_a_reference():
    result = read_csv(csv_bytes(GOOD[0], GOOD[1], GOOD[0].replace(",10,", ",10.0,")))
    assert problems(result) == [
        "line 2: rejected with movement 'PO-1' (see line 4)",
        "line 3: rejected with movement 'PO-1' (see line 4)",
        "line 4: duplicate of line 2 in reference 'PO-1' (same sku, quantity, unit, warehouses, bins, lot and "
        "cost); give each line once",
    ]


def test_one_bad_line_rejects_its_movement_and_names_the_other_lines():
    # Given PO-1 with a bad second line
    result = read_csv(csv_bytes(GOOD[0], GOOD[1].replace("2.5", "0"), GOOD[2]))
    assert [(p.line, p.field, p.reference) for p in result.problems] == [
        (2, "", "PO-1"), (3, "quantity", "PO-1")]
    assert str(result.problems[0]) == "line 2: rejected with movement 'PO-1' (see line 3)"
    assert [m.reference for m in result.movements] == ["PO-2"]


def test_every_problem_of_a_row_is_reported():
    result = read_csv(csv_bytes("PO-9,purchase_receipt,2024-13-01,S01,Acme,SKU-1,0,ZZ,WH1,"))
    fields = sorted(p.field for p in result.problems)
    assert fields == ["document_date", "quantity", "unit"]


@pytest.mark.parametrize(("header", "expected"), [
    (HEADER.replace("quantity", "amount"), ["line 1: amount: unknown column in column G",
                                           "line 1: quantity: required column is missing"]),
    (HEADER + ",qty", ["line 1: qty: names the same column (quantity) as 'quantity'"]),
])
def test_header_problems_stop_the_whole_file(header, expected):
    result = read_csv(csv_bytes(*GOOD, header=header))
    assert not result.movements and result.rows_rejected == 3
    for start, text in zip(expected, problems(result), strict=True):
        assert text.startswith(start), text


def test_a_value_under_no_header_is_a_problem():
    result = read_csv(csv_bytes(GOOD[0] + ",surprise"))
    assert problems(result) == ["line 2: column K has a value (surprise) but no header"]


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "line 1: the file is empty"),
    (csv_bytes(), "line 1: no movement rows below the header"),
    (b"\xff\xff\xff", "line 1: is neither UTF-8"),
    ((HEADER + '\nPO-1,"unclosed\n').encode(), "line 2: is not well-formed CSV"),
])
def test_unreadable_files(data, expected):
    result = read_csv(data)
    assert not result.movements
    assert problems(result)[0].startswith(expected), problems(result)


# ---------------------------------------------------------------------------------- XLSX


def xlsx(rows: list[list[object]], *, title: str = "Sheet", stored: dict[str, str] | None = None) -> bytes:
    """An .xlsx of ``rows``; ``stored`` replaces cell values as written in the sheet XML (to get the
    17-digit values Excel stores for formula results, which openpyxl does not write itself)."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    if not stored:
        return buffer.getvalue()
    patched = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(patched, "w") as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                for written, replacement in stored.items():
                    assert f"<v>{written}</v>".encode() in content
                    content = content.replace(f"<v>{written}</v>".encode(), f"<v>{replacement}</v>".encode())
            target.writestr(info, content)
    return patched.getvalue()


XLSX_HEADER = ["单号", "类型", "日期", "物料编码", "数量", "单位", "仓库", "批号", "unit_cost"]


def test_xlsx_typed_cells(tmp_path: Path):
    # Given a sheet with Excel dates, numbers and a numeric sku
    data = xlsx([XLSX_HEADER,
                 ["MR-1", "其他入库", datetime(2024, 5, 1), 1001, 12, "PCS", "WH1", None, 3.25],
                 ["MR-1", None, None, "SKU-2", 0.125, "KG", "WH1", "L1", None]])
    path = tmp_path / "moves.xlsx"
    path.write_bytes(data)
    result = read_movements(path)
    assert result.ok, problems(result)
    assert result.format == "xlsx" and result.sheet == "Sheet" and result.lines_read == 2
    (movement,) = result.movements
    assert movement.kind is MovementKind.misc_receipt and movement.document_date == date(2024, 5, 1)
    first, second = movement.lines
    assert (first.sku, first.quantity, first.unit_cost) == ("1001", Decimal("12"), Decimal("3.25"))
    assert (second.quantity, second.lot, second.to_warehouse) == (Decimal("0.125"), "L1", "WH1")


def test_xlsx_float_artefacts_and_number_dates_are_refused_with_their_row():
    data = xlsx([XLSX_HEADER,
                 ["MR-1", "misc_receipt", datetime(2024, 5, 1), "SKU-1", 777.5, "KG", "WH1", None, None],
                 [],
                 ["MR-2", "misc_receipt", 45413, "SKU-1", 1, "PCS", "WH1", None, None],
                 ["MR-3", "misc_receipt", datetime(2024, 5, 1, 9, 30), "SKU-1", 1, "PCS", "WH1", None, None],
                 ["MR-4", "misc_receipt", datetime(2024, 5, 1), "SKU-1", 888.5, "KG", "WH1", None, None]],
                stored={"777.5": "0.30000000000000004", "888.5": "0.30000000000000"})
    result = read_xlsx(io.BytesIO(data))
    assert [(p.line, p.field) for p in result.problems] == [(2, "quantity"), (4, "document_date"), (5, "document_date")]
    assert "0.30000000000000004" in result.problems[0].message and "floating-point artefact" in result.problems[0].message
    assert "is a number (45413), not a date" in result.problems[1].message
    assert "has a time of day" in result.problems[2].message
    # and a value Excel stored with 15 significant digits is read exactly
    assert [(m.reference, m.lines[0].quantity) for m in result.movements] == [("MR-4", Decimal("0.3"))]


def test_xlsx_sheet_by_name_and_unknown_sheet():
    rows = [XLSX_HEADER, ["MR-1", "misc_receipt", date(2024, 5, 1), "SKU-1", 1, "PCS", "WH1", None, None]]
    data = xlsx([["title only"]], title="Cover")
    workbook_bytes = _two_sheets(rows)
    assert read_xlsx(io.BytesIO(workbook_bytes), sheet="Moves").accepted == 1
    missing = read_xlsx(io.BytesIO(workbook_bytes), sheet="Nope")
    assert problems(missing) == ["line 1: the workbook has no worksheet named 'Nope' (sheets: 'Cover', 'Moves')"]
    assert problems(read_xlsx(io.BytesIO(data)))[0].startswith("line 1: title only: unknown column in column A")


def _two_sheets(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    workbook.active.title = "Cover"
    workbook.active.append(["Movements for May"])
    sheet = workbook.create_sheet("Moves")
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_not_a_workbook():
    result = read_xlsx(io.BytesIO(b"plain text"))
    assert problems(result)[0].startswith("line 1: is not a readable .xlsx workbook")


# ---------------------------------------------------------------------------------- JSON

MOVEMENT = {
    "reference": "PO-1", "kind": "purchase_receipt", "document_date": "2024-05-01",
    "counterparty": {"code": "S01", "name": "Acme", "role": "supplier"},
    "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 10, "unit": "PCS", "to_warehouse": "WH1"}],
}


def with_(**changes) -> dict:
    return {**MOVEMENT, **changes}


def test_json_list_reads_decimals_exactly_and_names_the_item_line():
    # Given a pretty-printed list whose second item is bad
    bad = with_(reference="PO-2", lines=[{**MOVEMENT["lines"][0], "quantity": 0.1, "unit": "PCS"}])
    good = with_(reference="PO-3", lines=[{**MOVEMENT["lines"][0], "quantity": 0.1, "unit": "KG"}])
    text = json.dumps([MOVEMENT, bad, good], indent=2)
    result = read_json(text.encode())
    # Then the problem names the line where the item starts and its index
    second_item = [n for n, line in enumerate(text.splitlines(), start=1) if line == "  {"][1]
    assert problems(result) == [
        f"line {second_item} (item 1): lines[0].quantity: has 1 decimal place but unit 'PCS' allows none"]
    assert [m.reference for m in result.movements] == ["PO-1", "PO-3"]
    assert result.movements[1].lines[0].quantity == Decimal("0.1")  # exact, not via float


def test_json_lines_name_the_physical_line():
    lines = [json.dumps(MOVEMENT), "", json.dumps(with_(reference="PO-2", kind="teleport")), "{not json"]
    result = read_json("\n".join(lines).encode())
    assert [p.line for p in result.problems] == [3, 4]
    assert problems(result)[0].startswith("line 3: kind: input should be")
    assert problems(result)[1].startswith("line 4: is not valid JSON")
    assert result.lines_read == 3 and result.accepted == 1


def test_json_naive_time_uses_the_zone_or_is_a_problem():
    data = json.dumps([with_(posted_at="2024-05-01T10:30:00")]).encode()
    assert read_json(data, timezone="Asia/Shanghai").naive_times == 1
    (problem,) = read_json(data, timezone=None).problems
    assert (problem.field, problem.line, problem.item) == ("posted_at", 1, 0)
    assert "no UTC offset" in problem.message


def test_json_duplicate_references_reject_both():
    result = read_json("\n".join([json.dumps(MOVEMENT), json.dumps(MOVEMENT)]).encode())
    assert problems(result) == [
        "line 1: reference: 'PO-1' is used again on line 2; each movement must appear once",
        "line 2: reference: 'PO-1' is also used on line 1; each movement must appear once",
    ]
    assert not result.movements and result.rejected == ("PO-1",)


def test_json_single_object_and_wrong_shapes():
    assert read_json(json.dumps(MOVEMENT, indent=2).encode()).accepted == 1
    assert problems(read_json(b'"x"')) == ["line 1: holds a JSON str; expected a list of movement objects"]
    assert problems(read_json(b"[1]")) == ["line 1 (item 0): is a JSON int; expected a movement object"]
    assert problems(read_json(b"[]")) == ["line 1: holds no movements"]
    assert problems(read_json(b'[{"a": 1},')) [0].startswith("line 1: is not valid JSON")


# ---------------------------------------------------------------------------------- dispatch


def test_format_from_the_extension(tmp_path: Path):
    (tmp_path / "m.csv").write_bytes(csv_bytes(*GOOD))
    (tmp_path / "m.jsonl").write_text(json.dumps(MOVEMENT), encoding="utf-8")
    assert read_movements(tmp_path / "m.csv").accepted == 2
    assert read_movements(tmp_path / "m.jsonl").format == "json"
    with pytest.raises(ValueError, match="save the sheet as .xlsx"):
        read_movements(tmp_path / "m.xls")
    with pytest.raises(ValueError, match="unknown time zone"):
        read_movements(tmp_path / "m.csv", timezone="Mars/Olympus")


def test_problem_text():
    assert str(IntakeProblem(7, "quantity", "must be greater than zero")) == "line 7: quantity: must be greater than zero"
    assert str(IntakeProblem(3, "", "rejected", item=2)) == "line 3 (item 2): rejected"
