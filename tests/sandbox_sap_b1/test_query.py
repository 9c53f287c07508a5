"""Paging, next links, page-size preferences and the query options, in both dialects."""
from __future__ import annotations

from urllib.parse import urljoin

import pytest

from tests.sandbox_sap_b1.conftest import error_of

NEXT = {"v1": "odata.nextLink", "v2": "@odata.nextLink"}
ALL_ITEMS = [f"A{i:03d}" for i in range(45)] + ["LOT-1"]


def follow(http, root, first_url, **kwargs):
    """Every page from ``first_url`` on, following next links like a client would."""
    pages, url = [], first_url
    while url:
        answer = http.get(url, timeout=5, **kwargs)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body)
        link = body.get("odata.nextLink") or body.get("@odata.nextLink")
        url = urljoin(root + "/", link) if link else None
    return pages


def test_default_pages_hold_20_rows_and_next_links_carry_skip(connect, dialect):
    http, root = connect(dialect)
    pages = follow(http, root, f"{root}/Items?$select=ItemCode")
    assert [len(p["value"]) for p in pages] == [20, 20, 6]
    assert [r["ItemCode"] for p in pages for r in p["value"]] == ALL_ITEMS
    assert pages[0][NEXT[dialect]] == "Items?$select=ItemCode&$skip=20"
    assert NEXT[dialect] not in pages[-1]
    other = NEXT["v1" if dialect == "v2" else "v2"]
    assert all(other not in p for p in pages)


def test_next_links_keep_the_filter_and_can_be_absolute_paths(sim, connect):
    sim.seed({"service_layer": {"next_link": "absolute-path"}})
    http, root = connect("v1")
    first = http.get(f"{root}/Items", params={"$filter": "ItemCode ge 'A010'", "$select": "ItemCode"}, timeout=5).json()
    assert first["odata.nextLink"] == "/b1s/v1/Items?$filter=ItemCode%20ge%20'A010'&$select=ItemCode&$skip=20"
    rest = follow(http, root, urljoin(root, first["odata.nextLink"]))
    assert [r["ItemCode"] for p in [first, *rest] for r in p["value"]] == ALL_ITEMS[10:]


def test_prefer_maxpagesize_is_applied_and_said(connect, dialect):
    http, root = connect(dialect)
    answer = http.get(f"{root}/Items?$select=ItemCode", headers={"Prefer": "odata.maxpagesize=7"}, timeout=5)
    assert answer.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert len(answer.json()["value"]) == 7 and answer.json()[NEXT[dialect]].endswith("$skip=7")
    pages = follow(http, root, f"{root}/Items?$select=ItemCode", headers={"Prefer": "odata.maxpagesize=7"})
    assert len(pages) == 7 and [r["ItemCode"] for p in pages for r in p["value"]] == ALL_ITEMS


def test_b1s_pagesize_header_and_zero_means_unpaged(connect, dialect):
    http, root = connect(dialect)
    answer = http.get(f"{root}/Items?$select=ItemCode", headers={"B1S-PageSize": "30"}, timeout=5)
    assert len(answer.json()["value"]) == 30 and "Preference-Applied" not in answer.headers
    whole = http.get(f"{root}/Items?$select=ItemCode", headers={"B1S-PageSize": "0"}, timeout=5).json()
    assert len(whole["value"]) == 46 and NEXT[dialect] not in whole


def test_top_within_a_page_gives_no_next_link_and_beyond_it_carries_the_rest(connect, dialect):
    http, root = connect(dialect)
    small = http.get(f"{root}/Items?$top=5&$select=ItemCode", timeout=5).json()
    assert len(small["value"]) == 5 and NEXT[dialect] not in small
    pages = follow(http, root, f"{root}/Items?$top=25&$skip=3&$select=ItemCode")
    assert pages[0][NEXT[dialect]] == "Items?$select=ItemCode&$top=5&$skip=23"
    assert [r["ItemCode"] for p in pages for r in p["value"]] == ALL_ITEMS[3:28]


def test_select_orderby_and_counts(connect, dialect):
    http, root = connect(dialect)
    count_option = {"v1": {"$inlinecount": "allpages"}, "v2": {"$count": "true"}}[dialect]
    answer = http.get(f"{root}/Items", params={"$select": "ItemCode,QuantityOnStock", "$orderby":
                      "QuantityOnStock desc,ItemCode desc", "$top": "4", **count_option}, timeout=5).json()
    rows = answer["value"]
    assert [(r["ItemCode"], r["QuantityOnStock"]) for r in rows] == [
        ("A000", 10.0), ("A002", 7.0), ("LOT-1", 6.0), ("A001", 5.0)]
    if dialect == "v1":
        assert answer["odata.count"] == "46"                        # a string on v3
        assert set(rows[0]) == {"ItemCode", "QuantityOnStock"}
    else:
        assert answer["@odata.count"] == 46
        assert set(rows[0]) == {"@odata.etag", "ItemCode", "QuantityOnStock"}
        assert answer["@odata.context"].endswith("$metadata#Items(ItemCode,QuantityOnStock)")
    assert http.get(f"{root}/Items/$count", params={"$filter": "startswith(ItemCode,'A04')"}, timeout=5).text == "5"


def test_count_options_belong_to_their_dialect(connect):
    http, root = connect("v1")
    assert http.get(f"{root}/Items?$count=true", timeout=5).status_code == 400
    http, root = connect("v2")
    answer = http.get(f"{root}/Items?$inlinecount=allpages", timeout=5)
    assert answer.status_code == 400 and error_of(answer, "v2")[0] == "201"


@pytest.mark.parametrize(("version", "expression", "expected"), [
    ("v2", "ItemCode eq 'A001' or ItemCode eq 'A044'", ["A001", "A044"]),
    ("v2", "startswith(ItemCode,'A00') and not (ItemCode le 'A007')", ["A008", "A009"]),
    ("v2", "contains(ItemName,'m 4') and QuantityOnStock eq 0", ["A004"] + [f"A{i:03d}" for i in range(40, 45)]),
    ("v1", "substringof('m 4', ItemName) and QuantityOnStock eq 0", ["A004"] + [f"A{i:03d}" for i in range(40, 45)]),
    ("v1", "endswith(ItemCode,'-1')", ["LOT-1"]),
    ("v2", "QuantityOnStock gt 5.5", ["A000", "A002", "LOT-1"]),
    ("v2", "ManageBatchNumbers eq 'Y'", ["LOT-1"]),
    ("v2", "ManageBatchNumbers eq 'tYES' and ForeignName eq null", ["LOT-1"]),
    ("v2", "UpdateDate ge 2026-01-01 and UpdateDate lt 2026-01-02 and ItemCode eq 'A000'", ["A000"]),
    ("v1", "UpdateDate ge datetime'2026-01-01' and ItemCode eq 'A000'", ["A000"]),
    ("v1", "UpdateDate eq '20260101' and UpdateTime ge '12:00:00' and ItemCode lt 'A002'", ["A000", "A001"]),
    ("v2", "UpdateDate gt '2026-01-01T23:59:59'", []),
])
def test_filter_expressions(connect, version, expression, expected):
    http, root = connect(version)
    answer = http.get(f"{root}/Items", params={"$filter": expression, "$select": "ItemCode"},
                      headers={"B1S-PageSize": "0"}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert [r["ItemCode"] for r in answer.json()["value"]] == expected


@pytest.mark.parametrize(("version", "expression"), [
    ("v1", "contains(ItemName,'x')"),            # OData v4 only
    ("v2", "substringof('x',ItemName)"),         # OData v3 only
    ("v2", "UpdateDate ge datetime'2026-01-01'"),
    ("v1", "UpdateDate ge 2026-01-01"),
    ("v2", "tolower(ItemCode) eq 'a'"),
    ("v2", "ItemCode eq 'unterminated"),
    ("v2", "ItemCode eq"),
    ("v2", "ItemCode eq 'A' and"),
    ("v2", "QuantityOnStock add 1 eq 2"),
    ("v2", "ItemCode eq 1"),
])
def test_unsupported_filters_are_400_not_supported(connect, version, expression):
    http, root = connect(version)
    answer = http.get(f"{root}/Items", params={"$filter": expression}, timeout=5)
    assert answer.status_code == 400
    code, message = error_of(answer, version)
    assert (code, message.split("  ")[0]) == ("201", "Not supported query string")


def test_unknown_properties_and_options_are_refused(connect):
    http, root = connect("v2")
    assert error_of(http.get(f"{root}/Items?$select=Nope", timeout=5), "v2")[0] == "-1000"
    assert error_of(http.get(f"{root}/Items?$filter=Nope eq 1", timeout=5), "v2")[0] == "-1000"
    assert http.get(f"{root}/Items?$expand=Foo", timeout=5).status_code == 400


def test_case_insensitive_header(connect):
    http, root = connect("v2")
    params = {"$filter": "ItemName eq 'ITEM 3'", "$select": "ItemCode"}
    assert http.get(f"{root}/Items", params=params, timeout=5).json()["value"] == []
    folded = http.get(f"{root}/Items", params=params, headers={"B1S-CaseInsensitive": "true"}, timeout=5).json()
    assert [r["ItemCode"] for r in folded["value"]] == ["A003"]


def test_key_forms(connect):
    http, root = connect("v2")
    assert http.get(f"{root}/Items(ItemCode='A001')", timeout=5).json()["ItemCode"] == "A001"
    answer = http.get(f"{root}/Items('NOPE')", timeout=5)
    assert answer.status_code == 404 and error_of(answer, "v2") == ("-2028", "No matching records found (ODBC -2028)")
    assert http.get(f"{root}/Warehouses('BW')", timeout=5).json()["EnableBinLocations"] == "tYES"
    bins = http.get(f"{root}/BinLocations?$filter=Warehouse eq 'BW'&$select=AbsEntry,BinCode", timeout=5).json()
    assert [(b["AbsEntry"], b["BinCode"]) for b in bins["value"]] == [(1, "BW-A1"), (2, "BW-A2")]
    assert http.get(f"{root}/BinLocations(2)", timeout=5).json()["BinCode"] == "BW-A2"
    partners = http.get(f"{root}/BusinessPartners?$filter=CardType eq 'S'&$select=CardCode,CardType", timeout=5)
    assert [(p["CardCode"], p["CardType"]) for p in partners.json()["value"]] == [("S100", "cSupplier")]
