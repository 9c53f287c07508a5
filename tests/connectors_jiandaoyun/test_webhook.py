"""receive_webhook: verification over the raw body, freshness, headers, and decoding by form."""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import responses
from pydantic import SecretStr

from canonical import Item, Movement
from connectors.base import Entity, WebhookRequest
from connectors.errors import ContractViolation, WebhookRefused
from connectors.jiandaoyun import JiandaoyunConnector, JiandaoyunSettings

SECRET = "hook-secret-0123456789"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ITEMS, MOVEMENTS = "56fcab0f02c4675e3fe9694a", "56fcab0f02c4675e3fe9694c"


LINE_FIELDS = ("line_sku", "line_qty", "line_unit", "line_cost", "line_lot", "line_from_bin", "line_to_bin")


def _widgets(form) -> list[dict]:
    """What widget/list answers for ``form`` when every field is named by its pushed key."""
    names = {f: getattr(form, f) for f in type(form).model_fields if f not in ("entry_id", "kinds", "lines")}
    top = [{"name": ref, "widgetName": ref, "label": ref} for f, ref in names.items()
           if ref is not None and f not in LINE_FIELDS]
    if getattr(form, "lines", None):
        items = [{"name": names[f], "widgetName": names[f], "label": names[f]} for f in LINE_FIELDS if names.get(f)]
        top.append({"name": form.lines, "widgetName": form.lines, "label": form.lines, "type": "subform",
                    "items": items})
    return top


@pytest.fixture
def connector():
    # fields named by alias/widget ID; the one widget/list read per form that decoding makes is
    # answered by `responses` (no server behind the URL)
    settings = JiandaoyunSettings(
        url="http://127.0.0.1:9/api", api_key=SecretStr("k"), webhook_secret=SecretStr(SECRET),
        items={"sku": "item_code", "name": "item_name", "spec": "spec", "unit": "unit", "category": "category",
               "barcode": "barcode", "batch_managed": "batch_managed", "status": "status"},
        movements={name: f"_w_{name}" for name in ("number", "kind", "date", "warehouse", "from_warehouse",
                                                   "to_warehouse", "partner_code", "partner_name", "reference",
                                                   "key", "memo", "lines", "line_sku", "line_qty", "line_unit",
                                                   "line_cost", "line_lot", "line_from_bin", "line_to_bin")})
    forms = {f.entry_id: f for f in (settings.items, settings.warehouses, settings.movements)}

    def widget_list(request):
        form = forms[json.loads(request.body)["entry_id"]]
        return 200, {}, json.dumps({"widgets": _widgets(form), "sysWidgets": []})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_callback(responses.POST, "http://127.0.0.1:9/api/v5/app/entry/widget/list", callback=widget_list)
        made = JiandaoyunConnector(settings)
        yield made
        made.close()


def sign(nonce: str, body: str, secret: str, timestamp: str) -> str:
    return hashlib.sha1(f"{nonce}:{body}:{secret}:{timestamp}".encode()).hexdigest()


def pushed(event: dict, *, pretty: bool = False, age: float = 0, secret: str = SECRET, drop: str | None = None,
           timestamp: str | None = None, deliver_id: str = "d-1") -> WebhookRequest:
    body = json.dumps(event, ensure_ascii=False, indent=2 if pretty else None,
                      separators=None if pretty else (",", ":"))
    stamp = timestamp if timestamp is not None else str(int((NOW - timedelta(seconds=age)).timestamp()))
    nonce = "a1b2c3"
    query = {"timestamp": stamp, "nonce": nonce}
    headers = {"content-type": "application/json", "x-jdy-deliverid": deliver_id,
               "x-jdy-signature": sign(nonce, body, secret, stamp)}
    for mapping in (query, headers):
        mapping.pop(drop, None)
    return WebhookRequest("POST", "/hooks/jdy", query, headers, body.encode("utf-8"), NOW)


ITEM_EVENT = {"op": "data_create", "opTime": 1767268800000, "data": {
    "_id": "6b07fd05c9a2790006000001", "appId": "5e0dca0cc9a2790006c11e02", "entryId": ITEMS,
    "item_code": "TS-001", "item_name": "运动T恤", "unit": "PCS", "spec": "", "category": "服装",
    "barcode": "", "batch_managed": "否", "status": "启用", "updateTime": "2026-01-01T11:59:59.000Z"}}


@pytest.mark.parametrize("pretty", [False, True])
def test_a_good_push_decodes_to_canonical_records(connector, pretty) -> None:
    event = connector.receive_webhook(pushed(ITEM_EVENT, pretty=pretty))
    assert (event.delivery_id, event.operation, event.entity) == ("d-1", "data_create", Entity.ITEMS)
    assert event.records == (Item(sku="TS-001", name="运动T恤", base_unit="PCS", category="服装",
                                  modified_at=datetime(2026, 1, 1, 11, 59, 59, tzinfo=UTC)),)
    assert event.occurred_at == NOW and event.errors == ()


def test_the_signature_is_over_the_raw_bytes(connector) -> None:
    # a pretty body signed as sent verifies; the same event re-serialised compactly does not
    request = pushed(ITEM_EVENT, pretty=True)
    compact = json.dumps(ITEM_EVENT, ensure_ascii=False, separators=(",", ":")).encode()
    with pytest.raises(WebhookRefused, match="signature"):
        connector.receive_webhook(WebhookRequest("POST", request.path, request.query, request.headers, compact, NOW))


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"secret": "not-the-secret"}, "signature"),
    ({"age": 301}, "old"),
    ({"age": -301}, "future"),
    ({"timestamp": "12a"}, "timestamp"),
    ({"drop": "timestamp"}, "timestamp"),
    ({"drop": "nonce"}, "nonce"),
    ({"drop": "x-jdy-signature"}, "X-JDY-Signature"),
    ({"drop": "x-jdy-deliverid"}, "X-JDY-DeliverId"),
])
def test_refusals(connector, kwargs, reason) -> None:
    with pytest.raises(WebhookRefused, match=reason) as refused:
        connector.receive_webhook(pushed(ITEM_EVENT, **kwargs))
    assert refused.value.http_status == 401 and SECRET not in str(refused.value)


def test_a_push_just_inside_the_window_is_accepted(connector) -> None:
    assert connector.receive_webhook(pushed(ITEM_EVENT, age=299)).entity is Entity.ITEMS


def test_no_secret_configured_refuses_everything() -> None:
    bare = JiandaoyunConnector(JiandaoyunSettings(url="http://127.0.0.1:9/api", api_key=SecretStr("k")))
    with pytest.raises(WebhookRefused, match="webhook_secret"):
        bare.receive_webhook(pushed(ITEM_EVENT))


def test_connection_test_form_update_and_unknown_forms_carry_no_entity(connector) -> None:
    for event in ({"op": "data_test", "opTime": 1767268800000},
                  {"op": "data_create", "data": {"entryId": "f" * 24, "_id": "x"}},
                  {"op": "form_update", "data": {"entryId": ITEMS, "widgets": []}}):
        decoded = connector.receive_webhook(pushed(event))
        assert decoded.entity is None and decoded.records == () and decoded.operation == event["op"]


def test_removals_give_natural_keys(connector) -> None:
    event = {"op": "data_remove", "data": {**ITEM_EVENT["data"], "deleteTime": "2026-01-01T12:00:00.000Z"}}
    decoded = connector.receive_webhook(pushed(event))
    assert decoded.entity is Entity.ITEMS and decoded.removed == ("TS-001",) and decoded.records == ()
    movement = {"op": "data_remove", "data": {"entryId": MOVEMENTS, "_id": "m1", "_w_reference": "R-9"}}
    assert connector.receive_webhook(pushed(movement)).removed == ("R-9",)
    # a movement keyed in the UI has no reference: its 单号 is the key, as a read gives it
    numbered = {"op": "data_remove", "data": {"entryId": MOVEMENTS, "_id": "m2", "_w_number": "CRK000042"}}
    assert connector.receive_webhook(pushed(numbered)).removed == ("CRK000042",)


def test_movements_decode_and_bad_records_become_errors(connector) -> None:
    data = {"entryId": MOVEMENTS, "_id": "m1", "_w_kind": "采购入库", "_w_date": "2024-02-29T16:00:00.000Z",
            "_w_warehouse": "WH01", "_w_reference": "R-1", "_w_partner_code": "SUP-01",
            "_w_lines": [{"_id": "r1", "_w_line_sku": "RICE-5", "_w_line_qty": 1.5, "_w_line_unit": "KG"}]}
    decoded = connector.receive_webhook(pushed({"op": "data_update", "data": data}))
    movement = decoded.records[0]
    assert isinstance(movement, Movement) and movement.reference == "R-1" and str(movement.lines[0].quantity) == "1.5"
    assert movement.document_date.isoformat() == "2024-03-01"
    broken = connector.receive_webhook(pushed({"op": "data_update", "data": {**data, "_w_kind": "借出"}}))
    assert broken.records == () and broken.errors[0].field == "_w_kind" and "R-1" in broken.errors[0].message


def test_a_verified_body_that_is_not_an_event_is_a_contract_violation(connector) -> None:
    body = "[1,2]"
    stamp = str(int(NOW.timestamp()))
    request = WebhookRequest("POST", "/h", {"timestamp": stamp, "nonce": "n"},
                             {"x-jdy-deliverid": "d", "x-jdy-signature": sign("n", body, SECRET, stamp)},
                             body.encode(), NOW)
    with pytest.raises(ContractViolation):
        connector.receive_webhook(request)
