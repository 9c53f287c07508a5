"""Our answers have the shape of the recorded real Service Layer answers (``/work/shared/reference/sap_b1``).

Each recorded request is replayed against the simulator; status, key sets (recursively), JSON value
types, annotations, value formats (dates, times, ETags) and the headers that matter must agree.
Values differ, of course; ``null`` on either side matches any type.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sandbox.sap_b1 import SapB1Simulator
from tests.sandbox_sap_b1.conftest import CREDENTIALS

REFERENCE = Path("/work/shared/reference/sap_b1")
CASSETTES = sorted(REFERENCE.glob("*.yaml")) if REFERENCE.is_dir() else []
FORMATS = {
    "midnight date": re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00Z$"),
    "time of day": re.compile(r"^\d{2}:\d{2}:\d{2}$"),
    "weak etag": re.compile(r'^W/"[0-9A-F]{40}"$'),
}
HEADERS_THAT_MATTER = ("Content-Type", "ETag", "OData-Version")


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}[type(value)]


def compare(real: Any, ours: Any, where: str = "$") -> list[str]:
    """Differences in shape between a real JSON value and ours."""
    problems: list[str] = []
    real_kind, our_kind = _kind(real), _kind(ours)
    if real_kind is None or our_kind is None:
        return problems
    if real_kind != our_kind:
        return [f"{where}: real {real_kind} {real!r}, ours {our_kind} {ours!r}"]
    if real_kind == "dict":
        missing, extra = sorted(set(real) - set(ours)), sorted(set(ours) - set(real))
        if missing:
            problems.append(f"{where}: missing keys {missing}")
        if extra:
            problems.append(f"{where}: extra keys {extra}")
        for key in sorted(set(real) & set(ours)):
            problems += compare(real[key], ours[key], f"{where}.{key}")
    elif real_kind == "list" and real and ours:
        problems += compare(real[0], ours[0], f"{where}[0]")
    elif real_kind == "str":
        for name, pattern in FORMATS.items():
            if pattern.match(real) and not pattern.match(ours):
                problems.append(f"{where}: real is a {name} ({real!r}), ours is {ours!r}")
    return problems


def _udfs(value: Any, found: dict[str, set[str]], group: str = "Items") -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.startswith("U_"):
                found.setdefault(group, set()).add(key)
            elif isinstance(inner, list) and inner and isinstance(inner[0], dict):
                _udfs(inner[0], found, key)
            elif key == "value" and isinstance(inner, list):
                for row in inner:
                    _udfs(row, found, group)


def _interactions(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["interactions"]


@pytest.fixture
def replay_server():
    """A simulator seeded with the recorded item codes and the tenant's declared user fields."""
    codes: set[str] = set()
    udfs: dict[str, set[str]] = {}
    for cassette in CASSETTES:
        for interaction in _interactions(cassette):
            codes |= set(re.findall(r"Items\('([^']+)'\)", interaction["request"]["uri"]))
            try:
                body = json.loads(interaction["response"]["body"]["string"])
            except ValueError:
                continue
            _udfs(body, udfs)
    sim = SapB1Simulator()
    items = [{"sku": code, "name": "Recorded code", "barcode": code} for code in sorted(codes)]
    items += [{"sku": f"R{i:03d}", "name": f"Filler {i}", "barcode": f"99{i:05d}"} for i in range(8)]
    sim.seed({"company": {"user_fields": {group: sorted(names) for group, names in udfs.items()}},
              "world": {"items": items, "warehouses": [{"code": "01", "name": "Main"}, {"code": "02", "name": "B"}],
                        "balances": [{"sku": items[0]["sku"], "warehouse": "01", "qty": "3"}]}})
    with sim.serve() as server:
        yield server


@pytest.mark.skipif(not CASSETTES, reason="the recorded reference responses are not on this machine")
@pytest.mark.parametrize("cassette", CASSETTES, ids=lambda p: p.stem)
def test_replayed_requests_answer_in_the_recorded_shape(cassette, replay_server):
    http = requests.Session()
    # A cassette may start after the login: log in first (a recorded Login is replayed as well)
    assert http.post(f"{replay_server.url}/b1s/v2/Login", json=CREDENTIALS, timeout=5).status_code == 200
    for interaction in _interactions(cassette):
        request, recorded = interaction["request"], interaction["response"]
        path = re.sub(r"^https?://[^/]+", "", request["uri"])
        body = json.dumps(CREDENTIALS) if path.endswith("/Login") else request["body"]
        answer = http.request(request["method"], replay_server.url + path, data=body,
                              headers={"Content-Type": "application/json"}, timeout=10)
        # Status and the headers that matter agree
        assert answer.status_code == recorded["status"]["code"], (path, answer.text[:300])
        for name in HEADERS_THAT_MATTER:
            real = recorded["headers"].get(name)
            assert (real is None) == (name not in answer.headers), f"{path}: header {name}"
            if real is not None and name != "ETag":
                assert answer.headers[name] == real[0], f"{path}: header {name}"
        if "Set-Cookie" in recorded["headers"]:
            assert "B1SESSION=" in answer.headers["Set-Cookie"]
        # The bodies have the same keys, value types, annotations and value formats
        real_body = json.loads(recorded["body"]["string"])
        our_body = answer.json()
        assert compare(real_body, our_body) == [], path
        for key in ("@odata.context",):
            if key in real_body:
                assert our_body[key].split("/b1s/")[1] == real_body[key].split("/b1s/")[1]
        if "ETag" in recorded["headers"]:
            assert answer.headers["ETag"] == our_body["@odata.etag"]


def test_the_comparison_notices_shape_changes():
    real = {"A": 1.0, "B": "2023-10-26T00:00:00Z", "C": [{"D": None}], "E": None}
    assert compare(real, {"A": 2.0, "B": "2024-01-01T00:00:00Z", "C": [], "E": "x"}) == []
    assert compare(real, {"A": 1, "B": "2024-01-01", "C": [{"D": 1, "F": 2}]}) == [
        "$: missing keys ['E']", "$.A: real float 1.0, ours int 1",
        "$.B: real is a midnight date ('2023-10-26T00:00:00Z'), ours is '2024-01-01'", "$.C[0]: extra keys ['F']"]
    assert compare({"value": [{"X": "W/\"" + "A" * 40 + "\""}]}, {"value": [{"X": "W/\"abc\""}]}) == [
        "$.value[0].X: real is a weak etag ('W/\"" + "A" * 40 + "\"'), ours is 'W/\"abc\"'"]
