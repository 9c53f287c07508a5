"""The Jiandaoyun simulator's v5 API: envelope, paging, filters, record shape, writes, batches, stock, limits."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest

from sandbox.jiandaoyun import JiandaoyunSimulator
from sandbox.jiandaoyun_forms import (
    APP_ID,
    ITEMS_ENTRY,
    LEDGER_ENTRY,
    MOVEMENTS_ENTRY,
    WAREHOUSES_ENTRY,
)
from tests.conformance.kit import Clock

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX24 = re.compile(r"^[0-9a-f]{24}$")
LINES = "_widget_1669106585520"
SKU, QTY, UNIT = "_widget_1669106585522", "_widget_1669106585523", "_widget_1669106585524"
KIND, DATE, WAREHOUSE = "_widget_1669106585502", "_widget_1669106585503", "_widget_1669106585505"


def receipt(sku: str, qty: object, *, kind: str = "采购入库", warehouse: str = "WH1", key: str = "") -> dict:
    return {KIND: {"value": kind}, DATE: {"value": "2026-01-01T00:00:00.000Z"}, WAREHOUSE: {"value": warehouse},
            "hub_key": {"value": key},
            LINES: {"value": [{SKU: {"value": sku}, QTY: {"value": qty}, UNIT: {"value": "PCS"}}]}}


# --- envelope and auth -----------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_is_400_code_8302(api, key) -> None:
    status, body = api("app/list", {}, key=key)
    assert status == 400 and body["code"] == 8302 and body["msg"]


def test_unknown_route_and_form_are_errors(api) -> None:
    status, body = api("app/entry/data/nothing", {}, form=ITEMS_ENTRY)
    assert status == 404 and "code" in body
    status, body = api("app/entry/data/list", {"app_id": APP_ID, "entry_id": "0" * 24})
    assert status == 400 and body["code"] == 3005


def test_missing_parameter_is_code_1_and_null_is_absent(api) -> None:
    status, body = api("app/entry/data/get", {"app_id": APP_ID, "entry_id": ITEMS_ENTRY})
    assert (status, body["code"]) == (400, 1)
    # the Java demo sends nulls for unset optionals: they count as absent
    status, body = api("app/entry/data/list", {"data_id": None, "fields": None, "filter": None, "limit": None},
                       form=ITEMS_ENTRY)
    assert status == 200 and len(body["data"]) == 10


# --- schema ------------------------------------------------------------------------------------


def test_app_entry_and_widget_lists(api) -> None:
    assert api("app/list", {"skip": 0, "limit": 10}) == (200, {"apps": [{"app_id": APP_ID, "name": "进销存"}]})
    status, body = api("app/entry/list", {"skip": 0, "limit": 2, "app_id": APP_ID})
    assert status == 200 and [f["entry_id"] for f in body["forms"]] == [ITEMS_ENTRY, WAREHOUSES_ENTRY]
    status, body = api("app/entry/widget/list", {}, form=MOVEMENTS_ENTRY)
    assert status == 200 and ISO_MS.match(body["dataModifyTime"])
    widgets = {w["label"]: w for w in body["widgets"]}
    assert set(widgets["明细"]) == {"name", "widgetName", "label", "type", "items"}
    assert widgets["外部单号"]["name"] == "hub_key" and widgets["外部单号"]["widgetName"].startswith("_widget_")
    assert widgets["业务类型"]["name"] == widgets["业务类型"]["widgetName"]
    assert {"_id", "createTime", "updateTime"} <= {w["name"] for w in body["sysWidgets"]}


def test_an_alias_change_changes_the_keys_of_reads(sim, api) -> None:
    sim.seed({"aliases": {"warehouses": {"_widget_1669106585401": "wh_code"}}})
    _, body = api("app/entry/data/list", {"limit": 1}, form=WAREHOUSES_ENTRY)
    assert body["data"][0]["wh_code"] == "WH1" and "_widget_1669106585401" not in body["data"][0]


# --- paging --------------------------------------------------------------------------------------


def test_list_pages_by_exclusive_cursor_in_rising_id_order(api) -> None:
    seen, cursor = [], None
    while True:
        status, body = api("app/entry/data/list", {"data_id": cursor, "limit": 7}, form=ITEMS_ENTRY)
        assert status == 200 and "total" not in body
        if not body["data"]:
            break
        assert len(body["data"]) <= 7
        seen.extend(body["data"])
        cursor = body["data"][-1]["_id"]
    ids = [r["_id"] for r in seen]
    assert len(ids) == 25 and ids == sorted(ids) and len(set(ids)) == 25
    assert all(HEX24.match(i) for i in ids)
    _, default = api("app/entry/data/list", {}, form=ITEMS_ENTRY)
    assert len(default["data"]) == 10
    assert api("app/entry/data/list", {"limit": 0}, form=ITEMS_ENTRY)[1]["code"] == 3005


def test_fields_limit_the_answer(api) -> None:
    _, body = api("app/entry/data/list", {"fields": ["item_code", "updateTime"], "limit": 1}, form=ITEMS_ENTRY)
    assert set(body["data"][0]) == {"item_code", "updateTime", "_id"}


# --- record shape and writes --------------------------------------------------------------------------


def test_records_read_plain_with_system_fields(api) -> None:
    _, body = api("app/entry/data/list", {"limit": 1}, form=ITEMS_ENTRY)
    record = body["data"][0]
    assert record["item_code"] == "A000" and record["item_name"] == "物料 0"
    assert record["appId"] == APP_ID and record["entryId"] == ITEMS_ENTRY
    assert ISO_MS.match(record["createTime"]) and ISO_MS.match(record["updateTime"])
    assert record["creator"]["username"] and record["updater"]["username"]


def test_create_get_update_delete(api, clock) -> None:
    status, created = api("app/entry/data/create", {"data": {
        "item_code": {"value": "NEW"}, "_widget_1669106585302": {"value": "新物料"},
        "safety_stock": {"value": 1.25}}}, form=ITEMS_ENTRY)
    assert status == 200
    record = created["data"]
    assert (record["item_code"], record["item_name"], record["safety_stock"]) == ("NEW", "新物料", 1.25)
    clock.advance(5)
    status, updated = api("app/entry/data/update", {"data_id": record["_id"], "data": {"spec": {"value": "L"}}},
                          form=ITEMS_ENTRY)
    assert status == 200 and updated["data"]["spec"] == "L" and updated["data"]["item_name"] == "新物料"
    assert updated["data"]["updateTime"] > record["updateTime"]
    assert api("app/entry/data/get", {"data_id": record["_id"]}, form=ITEMS_ENTRY)[1]["data"]["spec"] == "L"
    assert api("app/entry/data/delete", {"data_id": record["_id"]}, form=ITEMS_ENTRY) == (200, {"status": "success"})
    for route in ("get", "delete", "update"):
        status, body = api(f"app/entry/data/{route}", {"data_id": record["_id"], "data": {}}, form=ITEMS_ENTRY)
        assert (status, body["code"]) == (400, 4001), route


def test_no_required_or_unique_check_on_api_writes(api) -> None:
    first = api("app/entry/data/create", {"data": {"item_code": {"value": "A000"}}}, form=ITEMS_ENTRY)
    empty = api("app/entry/data/create", {"data": {}}, form=ITEMS_ENTRY)
    assert first[0] == empty[0] == 200
    _, body = api("app/entry/data/list", {"filter": {"rel": "and", "cond": [
        {"field": "item_code", "type": "text", "method": "eq", "value": ["A000"]}]}}, form=ITEMS_ENTRY)
    assert len(body["data"]) == 2


def test_datetimes_are_written_as_iso_or_epoch_ms_and_read_utc(api) -> None:
    for value in ("2022-06-10T16:00:00+08:00", 1654848000000):
        _, body = api("app/entry/data/create", {"data": {**receipt("A002", 1), DATE: {"value": value}}},
                      form=MOVEMENTS_ENTRY)
        assert body["data"][DATE] == "2022-06-10T08:00:00.000Z"


def test_subform_rows_keep_their_ids_when_echoed(api) -> None:
    _, body = api("app/entry/data/create", {"data": receipt("A002", 1)}, form=MOVEMENTS_ENTRY)
    record = body["data"]
    row_id = record[LINES][0]["_id"]
    assert HEX24.match(row_id) and record["_widget_1669106585501"]  # the serial number is the server's
    rows = [{"_id": {"value": row_id}, SKU: {"value": "A002"}, QTY: {"value": 3}, UNIT: {"value": "PCS"}},
            {"_id": {"value": "0" * 24}, SKU: {"value": "A003"}, QTY: {"value": 1}, UNIT: {"value": "PCS"}}]
    _, body = api("app/entry/data/update", {"data_id": record["_id"], "data": {LINES: {"value": rows}}},
                  form=MOVEMENTS_ENTRY)
    lines = body["data"][LINES]
    assert lines[0]["_id"] == row_id and lines[1]["_id"] not in (row_id, "0" * 24)
    assert [line[QTY] for line in lines] == [3, 1]


def test_linkdata_must_name_a_record_of_its_target_form(api) -> None:
    _, warehouses = api("app/entry/data/list", {"limit": 1}, form=WAREHOUSES_ENTRY)
    link = "_widget_1669106585504"
    ok = api("app/entry/data/create", {"data": {**receipt("A002", 1), link: {"value": warehouses["data"][0]["_id"]}}},
             form=MOVEMENTS_ENTRY)
    assert ok[0] == 200 and ok[1]["data"][link] == warehouses["data"][0]["_id"]
    status, body = api("app/entry/data/create", {"data": {**receipt("A002", 1), link: {"value": "f" * 24}}},
                       form=MOVEMENTS_ENTRY)
    assert (status, body["code"]) == (400, 3005)


def test_data_creator_names_the_creator(api) -> None:
    _, body = api("app/entry/data/create", {"data": {}, "data_creator": "zhangsan"}, form=ITEMS_ENTRY)
    assert body["data"]["creator"]["username"] == "zhangsan"


# --- filters ---------------------------------------------------------------------------------------


def _codes(api, *conds, rel="and") -> list[str]:
    status, body = api("app/entry/data/list", {"limit": 100, "filter": {"rel": rel, "cond": list(conds)}},
                       form=ITEMS_ENTRY)
    assert status == 200, body
    return [r["item_code"] for r in body["data"]]


def test_filter_methods(api, sim, clock) -> None:
    assert _codes(api, {"field": "item_code", "method": "eq", "value": ["A003"]}) == ["A003"]
    assert _codes(api, {"field": "item_code", "method": "in", "value": ["A003", "A001", "ZZZ"]}) == ["A001", "A003"]
    assert len(_codes(api, {"field": "item_code", "method": "nin", "value": ["A003"]})) == 24
    assert len(_codes(api, {"field": "item_code", "method": "ne", "value": ["A003"]})) == 24
    assert _codes(api, {"field": "item_name", "method": "like", "value": ["物料 2"]}) == [
        "A002", "A020", "A021", "A022", "A023", "A024"]
    assert _codes(api, {"field": "item_code", "method": "eq", "value": ["A001"]},
                  {"field": "item_code", "method": "eq", "value": ["A002"]}, rel="or") == ["A001", "A002"]
    assert len(_codes(api, {"field": "spec", "method": "empty"})) == 25
    assert _codes(api, {"field": "spec", "method": "not_empty"}) == []
    # range on system times: inclusive, null ends open
    clock.advance(60)
    sim.touch("items", "A007")
    stamp = "2026-01-01T12:01:00.000Z"
    assert _codes(api, {"field": "updateTime", "type": "datetime", "method": "range", "value": [stamp, None]}) == ["A007"]
    assert len(_codes(api, {"field": "updateTime", "method": "range", "value": [None, "2026-01-01T12:00:59Z"]})) == 24


def test_range_on_numbers(api) -> None:
    for code, stock in (("N1", 1), ("N2", 2.5), ("N3", 10)):
        api("app/entry/data/create", {"data": {"item_code": {"value": code}, "safety_stock": {"value": stock}}},
            form=ITEMS_ENTRY)
    assert _codes(api, {"field": "safety_stock", "type": "number", "method": "range", "value": [2, None]}) == ["N2", "N3"]
    assert _codes(api, {"field": "safety_stock", "method": "range", "value": [None, "2.5"]}) == ["N1", "N2"]


@pytest.mark.parametrize("cond", [
    {"field": "item_code", "method": "range", "value": ["A", "B"]},          # not on text
    {"field": "safety_stock", "method": "in", "value": [1]},                 # not on numbers
    {"field": "item_code", "method": "in", "value": [f"X{i}" for i in range(201)]},  # at most 200
    {"field": "no_such_field", "method": "eq", "value": ["x"]},
    {"field": "safety_stock", "type": "text", "method": "eq", "value": [1]},  # declared type is wrong
])
def test_bad_filters_are_refused(api, cond) -> None:
    status, body = api("app/entry/data/list", {"filter": {"rel": "and", "cond": [cond]}}, form=ITEMS_ENTRY)
    assert (status, body["code"]) == (400, 3005)


def test_subform_fields_are_not_filterable(api) -> None:
    status, body = api("app/entry/data/list", {"filter": {"rel": "and", "cond": [
        {"field": SKU, "method": "eq", "value": ["A000"]}]}}, form=MOVEMENTS_ENTRY)
    assert (status, body["code"]) == (400, 3005) and "subform" in body["msg"]


# --- batches ------------------------------------------------------------------------------------------


def test_batch_create_replays_its_transaction_id(api) -> None:
    rows = [{"item_code": {"value": f"B{i}"}} for i in range(3)]
    first = api("app/entry/data/batch_create", {"data_list": rows, "transaction_id": "tx-1"}, form=ITEMS_ENTRY)
    again = api("app/entry/data/batch_create", {"data_list": rows, "transaction_id": "tx-1"}, form=ITEMS_ENTRY)
    assert first[0] == 200 and first == again
    assert first[1]["status"] == "success" and first[1]["success_count"] == 3
    assert len(_codes(api, {"field": "item_code", "method": "in", "value": ["B0", "B1", "B2"]})) == 3


def test_batch_create_takes_at_most_100_and_is_all_or_nothing(api, sim) -> None:
    status, body = api("app/entry/data/batch_create",
                       {"data_list": [{"item_code": {"value": "X"}}] * 101}, form=ITEMS_ENTRY)
    assert (status, body["code"]) == (400, 3005)
    # one movement short of stock: the whole batch is refused and nothing moves
    before = sim.ledger.balances()
    status, body = api("app/entry/data/batch_create", {"data_list": [receipt("A000", 1, kind="销售出库"),
                                                                     receipt("A000", 1000, kind="销售出库")]},
                       form=MOVEMENTS_ENTRY)
    assert (status, body["code"]) == (400, 4000) and "data_list[1]" in body["msg"]
    assert sim.ledger.balances() == before
    assert len(api("app/entry/data/list", {"limit": 100}, form=MOVEMENTS_ENTRY)[1]["data"]) == 1  # the opening


def test_batch_update_and_delete(api) -> None:
    _, body = api("app/entry/data/batch_create", {"data_list": [{"item_code": {"value": f"U{i}"}} for i in range(3)]},
                  form=ITEMS_ENTRY)
    ids = body["success_ids"]
    status, body = api("app/entry/data/batch_update", {"data_ids": ids, "data": {"spec": {"value": "同"}}},
                       form=ITEMS_ENTRY)
    assert (status, body) == (200, {"status": "success", "success_count": 3})
    assert all(api("app/entry/data/get", {"data_id": i}, form=ITEMS_ENTRY)[1]["data"]["spec"] == "同" for i in ids)
    status, body = api("app/entry/data/batch_update", {"data_ids": ids, "data": {LINES: {"value": []}}},
                       form=MOVEMENTS_ENTRY)
    assert (status, body["code"]) == (400, 3005)
    assert api("app/entry/data/batch_delete", {"data_ids": ids}, form=ITEMS_ENTRY) == (
        200, {"status": "success", "success_count": 3})


# --- the tenant's stock automation -----------------------------------------------------------------------


def test_movements_post_stock_and_refuse_negative_with_4000(api, sim) -> None:
    status, body = api("app/entry/data/create", {"data": receipt("A001", "1.25", key="K1")}, form=MOVEMENTS_ENTRY)
    assert status == 200
    assert sim.ledger.balance("A001", "WH1") == Decimal("3.75")
    assert sim.documents_for("K1") == [body["data"]["_widget_1669106585501"]]
    status, refused = api("app/entry/data/create", {"data": receipt("A001", 99, kind="其他出库", key="K2")},
                          form=MOVEMENTS_ENTRY)
    assert (status, refused["code"]) == (400, 4000) and sim.documents_for("K2") == []
    # the ledger form follows, and deleting the receipt reverses it
    _, ledger = api("app/entry/data/list", {"limit": 100}, form=LEDGER_ENTRY)
    row = next(r for r in ledger["data"] if r["_widget_1669106585601"] == "A001")
    assert row["_widget_1669106585605"] == 3.75 and row["_widget_1669106585607"] == "PCS"
    api("app/entry/data/delete", {"data_id": body["data"]["_id"]}, form=MOVEMENTS_ENTRY)
    assert sim.ledger.balance("A001", "WH1") == Decimal("2.5") and sim.documents_for("K1") == []


def test_seeded_balances_are_opening_movements(api, sim) -> None:
    sim.seed({"balances": [{"sku": "A005", "warehouse": "WH2", "qty": "7.5", "bin": "B-1"}]})
    assert sim.ledger.balance("A005", "WH2", "B-1") == Decimal("7.5")
    _, body = api("app/entry/data/list", {"limit": 100, "filter": {"rel": "and", "cond": [
        {"field": KIND, "method": "eq", "value": ["期初"]}]}}, form=MOVEMENTS_ENTRY)
    assert [r["_widget_1669106585510"] for r in body["data"]] == ["OPENING-WH1-1", "OPENING-WH2-2"]
    assert body["data"][1][LINES][0][QTY] == 7.5 and body["data"][1][LINES][0][UNIT] == "PCS"


def test_transfers_move_between_two_warehouses(api, sim) -> None:
    data = {KIND: {"value": "调拨"}, "_widget_1669106585506": {"value": "WH1"}, "_widget_1669106585507": {"value": "WH2"},
            LINES: {"value": [{SKU: {"value": "A000"}, QTY: {"value": 4}}]}}
    assert api("app/entry/data/create", {"data": data}, form=MOVEMENTS_ENTRY)[0] == 200
    assert (sim.ledger.balance("A000", "WH1"), sim.ledger.balance("A000", "WH2")) == (6, 4)


# --- rate limits -------------------------------------------------------------------------------------------


def test_rate_limits_per_endpoint_class_and_company() -> None:
    ticker = Clock(100.0)
    sim = JiandaoyunSimulator(limiter_clock=ticker)
    limiter = sim.limiter
    # reads: 30 a second per key, then 8303; another class still has room
    assert all(limiter.admit("k", "read") for _ in range(30))
    assert not limiter.admit("k", "read")
    assert all(limiter.admit("k", "write") for _ in range(20)) and not limiter.admit("k", "write")
    # the company's 50 a second spans every key and class
    assert limiter.admit("other", "batch") is False
    ticker.advance(1.0)
    assert limiter.admit("k", "read") and limiter.admit("other", "batch")


def test_over_the_limit_answers_8303_and_the_off_switch() -> None:
    import requests

    sim = JiandaoyunSimulator(limiter_clock=Clock(100.0))  # the windows never slide: exact counts
    sim.seed({"rate_limits": {"read": 2}})
    headers = {"Authorization": "Bearer " + next(iter(sim.api_keys))}
    with sim.serve() as server:
        answers = [requests.post(f"{server.url}/api/v5/app/list", json={}, headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 400]
        assert answers[2].json() == {"code": 8303, "msg": "超出请求频率限制"} and "Retry-After" not in answers[2].headers
        sim.seed({"rate_limits": None})
        assert all(requests.post(f"{server.url}/api/v5/app/list", json={}, headers=headers).status_code == 200
                   for _ in range(5))


def test_injected_rate_limit_fault_answers_8303_with_retry_after(sim, server) -> None:
    import requests

    sim.faults.set({"rate_limits": [{"limit": 1, "period": 60, "status": 400}]})
    headers = {"Authorization": "Bearer " + next(iter(sim.api_keys))}
    ok = requests.post(f"{server.url}/api/v5/app/list", json={}, headers=headers)
    refused = requests.post(f"{server.url}/api/v5/app/list", json={}, headers=headers)
    assert ok.status_code == 200
    assert refused.status_code == 400 and refused.json()["code"] == 8303 and int(refused.headers["Retry-After"]) > 0


def test_v1_routes_take_the_ids_from_the_path(server, sim) -> None:
    import requests

    headers = {"Authorization": "Bearer " + next(iter(sim.api_keys))}
    root = f"{server.url}/api/v1/app/{APP_ID}"
    widgets = requests.post(f"{root}/entry/{ITEMS_ENTRY}/widgets", json={}, headers=headers).json()
    assert set(widgets) == {"widgets"} and widgets["widgets"][0]["name"] == "item_code"
    page = requests.post(f"{root}/entry/{ITEMS_ENTRY}/data", json={"data_id": "", "limit": 100, "fields": [],
                                                                   "filter": {}}, headers=headers).json()
    assert len(page["data"]) == 25
    created = requests.post(f"{root}/entry/{ITEMS_ENTRY}/data_create", json={"data": {"item_code": {"value": "V1"}}},
                            headers=headers).json()["data"]
    got = requests.post(f"{root}/entry/{ITEMS_ENTRY}/data_retrieve", json={"data_id": created["_id"]},
                        headers=headers).json()
    assert got["data"]["item_code"] == "V1"
    forms = requests.post(f"{root}/entry_retrieve", json={}, headers=headers).json()["forms"]
    assert ITEMS_ENTRY in {f["entry_id"] for f in forms}
    assert requests.post(f"{server.url}/api/v1/app/retrieve_all", json={}, headers=headers).json()["apps"]
    assert requests.post(f"{root}/entry/{ITEMS_ENTRY}/nope", json={}, headers=headers).status_code == 404
