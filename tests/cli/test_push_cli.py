"""``erphub push``: a movements file into the outbox, end to end through typer's runner.

The configuration names a Kingdee connection (secret from the environment) and a SQLite store;
nothing is delivered, so no vendor needs to be running.
"""
from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select
from typer.testing import CliRunner

from erphub.cli import app
from sync.store import Movement, Outbox, Store

HEADER = "单号,类型,日期,往来单位编码,往来单位名称,物料编码,数量,单位,仓库,posted_at"
GOOD = [
    "PO-1,采购入库,2024-05-01,S01,Acme,SKU-1,10,PCS,WH1,2024-05-01 10:30",
    "PO-1,采购入库,2024-05-01,S01,Acme,SKU-2,2.5,KG,WH1,",
    "SO-1,销售出库,2024-05-02,C01,Buyer,SKU-1,3,PCS,WH1,",
]
BAD = "SO-2,销售出库,2024-05-02,C01,Buyer,SKU-1,0,PCS,WH1,"




@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration with a SQLite store and two Kingdee connections."""
    monkeypatch.setenv("KD_APP_SECRET", "kd-secret-0f3a")
    config = tmp_path / "erphub.toml"
    blocks = "".join(textwrap.dedent(f"""
        [connections.{name}]
        platform = "kingdee"
        url = "http://127.0.0.1:9/k3cloud/"
        acct_id = "62f1d3e8"
        username = "api"
        app_id = "245_abcdef"
        app_secret = {{ env = "KD_APP_SECRET" }}
        timezone = "{zone}"
    """) for name, zone in (("kd_a", "Asia/Shanghai"), ("kd_b", "Asia/Shanghai")))
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n{blocks}', encoding="utf-8")
    return config


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def push(runner: CliRunner, hub: Path, *args: str):
    return runner.invoke(app, ["--config", str(hub), "push", *args])


def stored(hub: Path) -> tuple[list[str], int]:
    """References of the stored movements and the number of outbox rows."""
    db = hub.parent / "hub.db"
    if not db.exists():
        return [], 0
    with Store.open(f"sqlite:///{db}") as store, store.session() as session:
        store.upgrade()
        references = sorted(session.scalars(select(Movement.reference)))
        return references, session.scalar(select(func.count()).select_from(Outbox))


def test_a_clean_file_is_enqueued_for_every_target(runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    # Given a clean CSV with two movements
    file = write_csv(tmp_path / "moves.csv", *GOOD)
    # When it is pushed to two targets
    result = push(runner, hub, str(file), "--to", "kd_a,kd_b")
    # Then both movements are stored with one outbox row per target, and the summary says so
    assert result.exit_code == 0, result.output
    assert stored(hub) == (["PO-1", "SO-1"], 4)
    assert "rows read" in result.stdout and "outbox rows written" in result.stdout
    assert "1 time(s) without a UTC offset read as Asia/Shanghai (the timezone setting of kd_a, kd_b)" in result.stdout


def test_any_problem_without_partial_enqueues_nothing(runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "moves.csv", *GOOD, BAD)
    result = push(runner, hub, str(file), "--to", "kd_a")
    assert result.exit_code == 1
    assert "line 5: quantity: must be greater than zero" in result.stderr
    assert "nothing enqueued: 1 problem(s)" in result.stderr
    assert stored(hub) == ([], 0)


def test_partial_enqueues_the_good_movements_and_reports_the_rest(runner: CliRunner, hub: Path,
                                                                  tmp_path: Path) -> None:
    # Given PO-1 with one bad line, a bad SO-2 and a good SO-1
    file = write_csv(tmp_path / "moves.csv", GOOD[0], GOOD[1].replace("2.5", "2.5555"), GOOD[2], BAD)
    result = push(runner, hub, str(file), "--to", "kd_a", "--partial")
    assert result.exit_code == 0, result.output
    # Then only SO-1 is stored, and every rejected row is named
    assert stored(hub) == (["SO-1"], 1)
    lines = result.stderr.splitlines()
    assert lines == [
        "line 2: rejected with movement 'PO-1' (see line 3)",
        "line 3: quantity: has 4 decimal places but unit 'KG' allows at most 3",
        "line 5: quantity: must be greater than zero",
    ]
    summary = dict(_rows(result.stdout))
    assert summary["rows read"] == "4" and summary["movements accepted"] == "1"
    assert summary["movements rejected"] == "2" and summary["rows rejected"] == "3"
    assert summary["enqueued"] == "1"


def test_dry_run_touches_nothing(runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "moves.csv", *GOOD)
    result = push(runner, hub, str(file), "--to", "kd_a", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: 2 movement(s) would be enqueued for kd_a" in result.stdout
    assert not (hub.parent / "hub.db").exists()


def test_pushing_the_same_file_twice_adds_nothing_and_changed_content_is_refused(
        runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "moves.csv", *GOOD)
    assert push(runner, hub, str(file), "--to", "kd_a").exit_code == 0
    # When the same file is pushed again
    again = push(runner, hub, str(file), "--to", "kd_a")
    assert again.exit_code == 0 and dict(_rows(again.stdout))["already enqueued, unchanged"] == "2"
    assert stored(hub) == (["PO-1", "SO-1"], 2)
    # When SO-1 comes back with another quantity
    changed = write_csv(tmp_path / "changed.csv", GOOD[2].replace(",3,", ",4,"))
    refused = push(runner, hub, str(changed), "--to", "kd_a")
    assert refused.exit_code == 1
    assert "line 2: reference: 'SO-1' is already enqueued with different content" in refused.stderr
    assert stored(hub) == (["PO-1", "SO-1"], 2)


def test_xlsx_by_sheet_and_json(runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    workbook = Workbook()
    workbook.active.title = "Cover"
    sheet = workbook.create_sheet("Moves")
    sheet.append(HEADER.split(","))
    sheet.append(["MR-1", "其他入库", "2024-05-01", None, None, "SKU-1", 5, "PCS", "WH1", None])
    buffer = io.BytesIO()
    workbook.save(buffer)
    (tmp_path / "moves.xlsx").write_bytes(buffer.getvalue())
    result = push(runner, hub, str(tmp_path / "moves.xlsx"), "--to", "kd_a", "--sheet", "Moves")
    assert result.exit_code == 0, result.output
    assert "moves.xlsx (XLSX, sheet 'Moves')" in result.stdout

    movement = {"reference": "MI-1", "kind": "misc_issue", "document_date": "2024-05-03",
                "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 1, "unit": "PCS", "from_warehouse": "WH1"}]}
    (tmp_path / "moves.jsonl").write_text(json.dumps(movement) + "\n", encoding="utf-8")
    assert push(runner, hub, str(tmp_path / "moves.jsonl"), "--to", "kd_a").exit_code == 0
    assert stored(hub) == (["MI-1", "MR-1"], 2)


def test_gb18030_file_says_how_it_was_read(runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    file = tmp_path / "moves.csv"
    file.write_bytes(("\n".join([HEADER, GOOD[2].replace("Buyer", "买家")]) + "\n").encode("gb18030"))
    result = push(runner, hub, str(file), "--to", "kd_a", "--timezone", "UTC")
    assert result.exit_code == 0, result.output
    assert "moves.csv (CSV, gb18030)" in result.stdout
    assert "encoding: not valid UTF-8 (line 1, byte" in result.stdout and "read as GB18030" in result.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["--to", "nope"], "no connection named 'nope'"),
    (["--to", "kd_a", "--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'"),
])
def test_usage_errors_exit_2(runner: CliRunner, hub: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    file = write_csv(tmp_path / "moves.csv", *GOOD)
    result = push(runner, hub, str(file), *args)
    assert result.exit_code == 2
    assert expected in result.output
    assert stored(hub) == ([], 0)


def test_nothing_accepted_with_partial_still_fails(runner: CliRunner, hub: Path, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "moves.csv", BAD)
    result = push(runner, hub, str(file), "--to", "kd_a", "--partial")
    assert result.exit_code == 1
    assert "nothing to enqueue: no movement was accepted" in result.stderr


def _rows(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            yield cells[0], cells[1]
