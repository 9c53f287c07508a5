"""KingdeeConnector push/find/resume logic and paging, on an in-memory fake of K3CloudClient."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from canonical import Movement, MovementKind, MovementLine, Partner
from connectors.base import Entity
from connectors.errors import Ambiguous, ConfigError, Rejected
from connectors.kingdee import KingdeeConnector, KingdeeSettings
from connectors.kingdee.client import QueryPage, SaveResult, VendorStatus


class FakeK3:
    """Bills by form; Save/Submit/Audit/CancelAssign/Delete with the documented status rules."""

    def __init__(self) -> None:
        self.bills: dict[str, dict[int, dict]] = {}
        self.calls: list[tuple[str, str]] = []
        self.next_id = 100001
        self.refuse_audit: Rejected | None = None
        self.audit_elsewhere = False  # another (lost) attempt audits the bill just before ours
        self.save_error: Exception | None = None
        self.saved_options: list[dict] = []
        self.queries: list[tuple[str, str]] = []
        self.master: dict[str, list[list]] = {}

    # -- reads
    def execute_bill_query(self, form_id, field_keys, *, filter_string="", order_string="", start_row=0, limit=2000):
        self.queries.append((form_id, filter_string))
        if form_id in self.master:
            return self.master[form_id][start_row:start_row + limit]
        rows = []
        for fid, bill in sorted(self.bills.get(form_id, {}).items()):
            if self._matches(fid, bill, filter_string):
                rows.append([{"FID": fid}.get(k, bill.get(k)) for k in field_keys])
        return rows[start_row:start_row + limit]

    def _matches(self, fid, bill, text):
        if m := re.fullmatch(r"FID = (\d+)", text):
            return fid == int(m.group(1))
        if m := re.fullmatch(r"(\w+) = '((?:[^']|'')*)'", text):
            return bill.get(m.group(1)) == m.group(2).replace("''", "'")
        raise AssertionError(f"unexpected filter {text!r}")

    def query_pages(self, form_id, field_keys, *, filter_string="", order_string="", page_size=2000, start_row=0):
        while True:
            rows = self.execute_bill_query(form_id, field_keys, filter_string=filter_string,
                                           order_string=order_string, start_row=start_row, limit=page_size)
            last = len(rows) < page_size
            yield QueryPage(start_row, rows, None if last else start_row + len(rows))
            if last:
                return
            start_row += len(rows)

    # -- writes
    def save(self, form_id, model, *, need_return_fields=("FBillNo",), auto_submit_audit=False, options=None,
             record=None):
        self.calls.append(("Save", form_id))
        self.saved_options.append({"auto": auto_submit_audit, **(options or {})})
        if self.save_error:
            raise self.save_error
        fid, self.next_id = self.next_id, self.next_id + 1
        bill = {"FBillNo": model.get("FBillNo") or f"NO{fid}", "FNote": model.get("FNote"),
                "FDocumentStatus": "C" if auto_submit_audit else "A"}
        self.bills.setdefault(form_id, {})[fid] = bill
        return SaveResult(str(fid), bill["FBillNo"], {})

    def operate(self, op, form_id, ids, *, options=None, record=None, bill=None):
        self.calls.append((op, form_id))
        bill = self.bills[form_id][int(ids[0])]
        status = bill["FDocumentStatus"]
        allowed = {"Submit": "AD", "Audit": "B", "CancelAssign": "B", "Delete": "ZAD"}[op]
        if op == "Audit" and self.audit_elsewhere:
            bill["FDocumentStatus"] = "C"
            status = "C"
        if status not in allowed:
            raise Rejected(f"状态为{status}，不能{op}", vendor_code="12")
        if op == "Audit" and self.refuse_audit is not None:
            raise self.refuse_audit
        if op == "Delete":
            del self.bills[form_id][int(ids[0])]
        else:
            bill["FDocumentStatus"] = {"Submit": "B", "Audit": "C", "CancelAssign": "D"}[op]
        return VendorStatus(True, 0)

    def close(self):
        pass


def settings(**kw) -> KingdeeSettings:
    return KingdeeSettings(url="http://k3.test/k3cloud/", acct_id="acct", username="u", app_id="1_x",
                           app_secret="s3cret-app", **kw)


@pytest.fixture
def fake() -> FakeK3:
    return FakeK3()


def connector(fake, **kw) -> KingdeeConnector:
    return KingdeeConnector(settings(**kw), client=fake)  # type: ignore[arg-type]


def receipt_movement(reference="R1") -> Movement:
    return Movement(reference=reference, kind=MovementKind.purchase_receipt, document_date=date(2025, 1, 15),
                    counterparty=Partner(code="SUP-01", name="S", role="supplier"),
                    lines=(MovementLine(line_no=1, sku="TS-001", quantity=Decimal(3), unit="PCS",
                                        to_warehouse="WH01"),))


def issue_movement(reference="R2") -> Movement:
    return Movement(reference=reference, kind=MovementKind.sales_issue, document_date=date(2025, 1, 15),
                    counterparty=Partner(code="CUS-01", name="C", role="customer"),
                    lines=(MovementLine(line_no=1, sku="TS-001", quantity=Decimal(999), unit="PCS",
                                        from_warehouse="WH01"),))


def test_a_new_push_saves_submits_and_audits_once(fake):
    kd = connector(fake)
    receipt = kd.push(receipt_movement(), "K1")
    assert fake.calls == [("Save", "STK_InStock"), ("Submit", "STK_InStock"), ("Audit", "STK_InStock")]
    assert (receipt.created, receipt.posted, receipt.status, receipt.document_number) == (True, True, "C", "R1")
    # the key was looked up first, with a quoted equality on the key field
    assert ("STK_InStock", "FNote = 'K1'") in fake.queries


def test_a_repeated_key_finds_the_audited_bill_and_sends_nothing(fake):
    kd = connector(fake)
    first = kd.push(receipt_movement(), "K1")
    fake.calls.clear()
    again = kd.push(receipt_movement(), "K1")
    assert fake.calls == []
    assert (again.document_id, again.created, again.posted) == (first.document_id, False, True)


@pytest.mark.parametrize("stopped_at,resumed", [
    ("A", [("Submit", "STK_InStock"), ("Audit", "STK_InStock")]),
    ("B", [("Audit", "STK_InStock")]),
    ("D", [("Submit", "STK_InStock"), ("Audit", "STK_InStock")]),
])
def test_a_push_that_stopped_half_way_resumes_the_same_bill(fake, stopped_at, resumed):
    # Given an earlier attempt whose bill stopped after Save (A), Submit (B), or was withdrawn (D)
    fake.bills["STK_InStock"] = {100001: {"FBillNo": "R1", "FNote": "K1", "FDocumentStatus": stopped_at}}
    kd = connector(fake)
    # find() reports it, not posted
    found = kd.find("K1")
    assert found is not None and (found.document_id, found.status, found.posted) == ("100001", stopped_at, False)
    # When the push is repeated
    receipt = kd.push(receipt_movement(), "K1")
    # Then the life cycle of that bill is finished: no second Save
    assert fake.calls == resumed
    assert (receipt.document_id, receipt.created, receipt.posted) == ("100001", False, True)
    assert len(fake.bills["STK_InStock"]) == 1


def test_negative_stock_on_audit_is_rejected_and_the_bill_is_withdrawn_and_deleted(fake):
    fake.refuse_audit = Rejected("库存不足", vendor_code="11")
    kd = connector(fake)
    with pytest.raises(Rejected) as refused:
        kd.push(issue_movement(), "K2")
    assert refused.value.vendor_code == "11"
    assert fake.calls == [("Save", "SAL_OUTSTOCK"), ("Submit", "SAL_OUTSTOCK"), ("Audit", "SAL_OUTSTOCK"),
                          ("CancelAssign", "SAL_OUTSTOCK"), ("Delete", "SAL_OUTSTOCK")]
    assert refused.value.details["bill_left"].startswith("deleted")
    assert kd.find("K2") is None
    # and after the stock is fixed a retry saves a fresh bill
    fake.refuse_audit = None
    assert kd.push(issue_movement(), "K2").created is True


def test_keeping_refused_bills_leaves_it_unaudited_for_a_resume(fake):
    fake.refuse_audit = Rejected("库存不足", vendor_code="11")
    kd = connector(fake, delete_rejected_bills=False)
    with pytest.raises(Rejected) as refused:
        kd.push(issue_movement(), "K2")
    assert "resumes" in refused.value.details["bill_left"]
    assert kd.find("K2").status == "B"
    fake.refuse_audit, fake.calls = None, []
    receipt = kd.push(issue_movement(), "K2")
    assert fake.calls == [("Audit", "SAL_OUTSTOCK")] and receipt.created is False


def test_an_audit_refused_because_a_lost_attempt_already_audited_is_a_success(fake):
    fake.bills["STK_InStock"] = {100001: {"FBillNo": "R1", "FNote": "K1", "FDocumentStatus": "B"}}
    fake.audit_elsewhere = True
    receipt = connector(fake).push(receipt_movement(), "K1")
    assert receipt.posted and receipt.document_id == "100001"
    assert ("CancelAssign", "STK_InStock") not in fake.calls and ("Delete", "STK_InStock") not in fake.calls


def test_auto_submit_audit_is_one_save(fake):
    kd = connector(fake, auto_submit_audit=True)
    receipt = kd.push(receipt_movement(), "K1")
    assert fake.calls == [("Save", "STK_InStock")] and fake.saved_options == [{"auto": True}]
    assert receipt.posted and kd.capabilities.posting_calls == 1
    assert connector(fake).capabilities.posting_calls == 3


def test_a_lost_save_answer_is_ambiguous_and_not_resent(fake):
    fake.save_error = Ambiguous("answer lost")
    kd = connector(fake)
    with pytest.raises(Ambiguous):
        kd.push(receipt_movement(), "K1")
    assert fake.calls == [("Save", "STK_InStock")]


def test_allow_negative_stock_sends_the_interaction_flag(fake):
    connector(fake, allow_negative_stock=True).push(receipt_movement(), "K1")
    assert fake.saved_options[0]["InterationFlags"] == "STK_InvCheckResult"


def test_keys_with_quotes_are_escaped_and_bad_keys_refused(fake):
    kd = connector(fake)
    assert kd.find("K'1 or '1'='1") is None
    assert ("STK_InStock", "FNote = 'K''1 or ''1''=''1'") in fake.queries
    for bad in ("", " K1", "K\n1", "K" * 81):
        with pytest.raises(ValueError):
            kd.find(bad)


def test_find_looks_in_every_form(fake):
    fake.bills["STK_MisDelivery"] = {7: {"FBillNo": "QTCK1", "FNote": "K9", "FDocumentStatus": "C"}}
    found = connector(fake).find("K9")
    assert (found.document_number, found.posted, found.created) == ("QTCK1", True, False)
    assert len({form for form, _ in fake.queries}) == 9


# -- reads ---------------------------------------------------------------------------------------


def material_row(n: int) -> list:
    return [n, f"M{n:03d}", f"物料{n}", "", "Pcs", False, "A", f"2024-03-01T08:00:{n:02d}", ""]


def test_pages_resume_tokens_and_max_modified(fake):
    fake.master["BD_MATERIAL"] = [material_row(n) for n in range(1, 6)]
    kd = connector(fake)
    pages = list(kd.read(Entity.ITEMS, page_size=2))
    assert [[i.sku for i in p.records] for p in pages] == [["M001", "M002"], ["M003", "M004"], ["M005"]]
    assert pages[-1].resume is None and all(p.resume for p in pages[:-1])
    assert pages[0].max_modified == datetime(2024, 3, 1, 0, 0, 2, tzinfo=timezone.utc)
    # a token is self-contained: it resumes with its own page size
    rest = list(kd.read(Entity.ITEMS, resume=pages[0].resume, page_size=100))
    assert [[i.sku for i in p.records] for p in rest] == [["M003", "M004"], ["M005"]]
    with pytest.raises(ValueError):
        list(kd.read(Entity.WAREHOUSES, resume=pages[0].resume))


def test_a_record_that_does_not_map_is_a_page_error_and_the_read_goes_on(fake):
    bad = material_row(2)
    bad[4] = ""  # no base unit
    fake.master["BD_MATERIAL"] = [material_row(1), bad, material_row(3)]
    pages = list(connector(fake).read(Entity.ITEMS))
    assert [i.sku for p in pages for i in p.records] == ["M001", "M003"]
    errors = [e for p in pages for e in p.errors]
    assert [(e.entity, e.record_key, e.field) for e in errors] == [("items", "M002", "FBaseUnitId.FNumber")]


def test_incremental_filter_is_rendered_in_the_server_zone(fake):
    fake.master["BD_MATERIAL"] = []
    list(connector(fake).read(Entity.ITEMS, since=datetime(2024, 3, 1, tzinfo=timezone.utc)))
    assert fake.queries[-1] == ("BD_MATERIAL",
                                "(FUseOrgId.FNumber = '100') and (FModifyDate >= '2024-03-01 08:00:00')")


def test_locations_are_not_supported(fake):
    with pytest.raises(ConfigError):
        list(connector(fake).read(Entity.LOCATIONS))


def test_settings_refuse_missing_credentials_and_secrets_stay_hidden():
    with pytest.raises(ValueError):
        KingdeeSettings(url="http://k3.test/k3cloud/", acct_id="a", username="u", auth="signature")
    with pytest.raises(ValueError):
        KingdeeSettings(url="http://k3.test/k3cloud/", acct_id="a", username="u", auth="session")
    with pytest.raises(ValueError):
        settings(key_field="FBillNo")  # the reference already lives there
    ok = settings(key_field="FBillNo", reference_field=None)
    assert "s3cret-app" not in repr(ok)
    session = KingdeeSettings(url="http://k3.test/k3cloud/", acct_id="a", username="u", auth="session",
                              password="pw-123456")
    assert session.login_method == "password"
