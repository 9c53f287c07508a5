"""The error queue: recording, fingerprints, operator actions, and the `erphub errors` commands."""
from __future__ import annotations

import csv
import io
import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from connectors.base import ConnectionSettings
from connectors.errors import ContractViolation, Rejected
from connectors.redaction import register_secret, unregister_secret
from sync import errorqueue
from sync.connections import Connections
from sync.push import enqueue_many, payload_of
from sync.store import ErrorQueue, ErrorStatus, Outbox, OutboxStatus, Store, utcnow
from sync.store import outbox as ob
from tests.conformance.kit import movement

SECRET = "s3cr3t-Pa55w0rd-42"


@pytest.fixture
def connections(store: Store) -> Connections:
    return Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://127.0.0.1:9"),
                               "sap": ConnectionSettings(platform="sap_b1", url="http://127.0.0.1:9")})


def dead(store: Store, connections: Connections, errors: list[Exception], *, target: str = "kd",
         memo: str | None = None) -> list[int]:
    """One movement per error, claimed, refused with that error and dead-lettered; entry ids."""
    skus = ("SH-001", "TS-001", "TS-002", "BAG-01", "OIL-1", "RICE-5")  # one ordering key each
    moves = [movement("sales_issue", lines=[(skus[i % len(skus)], "1")]) for i in range(len(errors))]
    if memo is not None:
        moves = [m.model_copy(update={"memo": memo}) for m in moves]
    with store.session() as s:
        enqueue_many(s, moves, [target], connections=connections)
    ids = []
    now = utcnow()
    with store.session(write=True) as s:
        rows = ob.claim(s, worker_id="w", limit=len(errors), lease_seconds=60, now=now,
                        target_connection_ids=[connections.id(target)])
        for row, error, mv in zip(rows, errors, moves, strict=True):
            assert ob.mark_failed(s, row.id, worker_id="w", now=now, error_kind=error.kind, error_message=str(error))
            ids.append(errorqueue.record_dead_letter(s, outbox=row, payload=payload_of(mv), record_key=mv.reference,
                                                    error=error, now=now).id)
    return ids


def stock_refusal(sku: str, qty: int) -> Rejected:
    return Rejected(f"库存不足: DN-{qty:06d}: negative stock on '{sku}' @ WH01: on hand 0, requested {qty}",
                    vendor_code="E_STOCK_NEGATIVE")


# -- fingerprints ----------------------------------------------------------------------------------


def test_alike_errors_share_a_fingerprint() -> None:
    a, b = stock_refusal("SH-001", 3), stock_refusal("TS-002", 120)
    assert errorqueue.fingerprint("rejected", a.vendor_code, str(a)) == errorqueue.fingerprint(
        "rejected", b.vendor_code, str(b))
    # another code, kind or message shape is another group
    assert errorqueue.fingerprint("rejected", "11", str(a)) != errorqueue.fingerprint("rejected", "E_STOCK_NEGATIVE",
                                                                                       str(a))
    assert errorqueue.fingerprint("contract_violation", None, "x") != errorqueue.fingerprint("rejected", None, "x")
    assert errorqueue.fingerprint("rejected", None, "unknown item") != errorqueue.fingerprint(
        "rejected", None, "closed period")
    assert errorqueue.normalise_message("bill 100042 of 2024-03-01 for 'OB''50%' (uuid "
                                        "123e4567-e89b-12d3-a456-426614174000)") == "bill # of # for '?' (uuid #)"


# -- recording --------------------------------------------------------------------------------------


def test_dead_letter_keeps_what_an_operator_needs_and_no_secret(store, connections) -> None:
    register_secret(SECRET)
    try:
        [entry_id] = dead(store, connections, [Rejected(f"refused; password={SECRET}", vendor_code="11")],
                          memo=f"call back, token {SECRET}")
    finally:
        unregister_secret(SECRET)
    with store.session() as s:
        detail = errorqueue.show(s, entry_id)
    assert detail.connection == "kd" and detail.kind == "rejected" and detail.vendor_code == "11"
    assert detail.status == "open" and detail.attempts == 1 and detail.delivery_attempts == 1
    assert detail.outbox_status == OutboxStatus.FAILED and detail.idempotency_key.startswith("H")
    assert detail.payload["reference"] == detail.record_key and detail.payload["lines"][0]["sku"] == "SH-001"
    assert SECRET not in json.dumps(detail.to_dict(), ensure_ascii=False)


def test_a_row_that_fails_again_reopens_its_entry(store, connections) -> None:
    [entry_id] = dead(store, connections, [stock_refusal("SH-001", 1)])
    with store.session() as s:
        errorqueue.retry(s, [entry_id])
    with store.session(write=True) as s:
        [row] = ob.claim(s, worker_id="w", limit=1, lease_seconds=60, now=utcnow())
        ob.mark_failed(s, row.id, worker_id="w", now=utcnow(), error_kind="rejected", error_message="again")
        again = errorqueue.record_dead_letter(s, outbox=row, payload=None, record_key="x",
                                              error=stock_refusal("SH-001", 1))
    assert again.id == entry_id and again.status == ErrorStatus.OPEN and again.attempts == 2


def test_record_errors_from_pull_group_and_resolve(store, connections) -> None:
    kd = connections.id("kd")
    with store.session() as s:
        first = errorqueue.record_record_error(s, connection_id=kd, entity="items", record_key="MAT-9",
                                               message="unit 'BOX' unknown", payload={"FNumber": "MAT-9",
                                                                                      "password": SECRET})
        again = errorqueue.record_record_error(s, connection_id=kd, entity="items", record_key="MAT-9",
                                               message="unit 'BOX' unknown")
        assert again.id == first.id and again.attempts == 2 and again.kind == "mapping"
        assert again.payload == {"FNumber": "MAT-9", "password": "***"}
        assert errorqueue.resolve_record(s, connection_id=kd, entity="items", record_key="MAT-9") == 1
        assert s.get(ErrorQueue, first.id).status == ErrorStatus.RESOLVED


# -- listing -----------------------------------------------------------------------------------------


def test_list_groups_by_fingerprint_and_filters(store, connections) -> None:
    ids = dead(store, connections, [stock_refusal("SH-001", 3), stock_refusal("TS-001", 7),
                                    ContractViolation("answer had no FID")])
    dead(store, connections, [stock_refusal("BAG-01", 2)], target="sap")
    with store.session() as s:
        groups = errorqueue.list(s)
        assert sorted(g.count for g in groups) == [1, 3]
        big = next(g for g in groups if g.count == 3)
        assert big.kind == "rejected" and big.connections == ("kd", "sap") and big.statuses == {"open": 3}
        assert [g.count for g in errorqueue.list(s, connection="kd", kind="rejected")] == [2]
        assert errorqueue.list(s, status="resolved") == []
        assert errorqueue.list(s, since=utcnow() + timedelta(hours=1)) == []
        assert {d.id for d in errorqueue.entries(s, fingerprint=big.fingerprint)} == set(ids[:2]) | {ids[-1] + 1}


def test_export_csv_and_json(store, connections) -> None:
    dead(store, connections, [stock_refusal("SH-001", 3), ContractViolation("answer had no FID")])
    with store.session() as s:
        rows = list(csv.DictReader(io.StringIO(errorqueue.export(s, "csv"))))
        data = json.loads(errorqueue.export(s, "json", kind="contract_violation"))
    assert [r["kind"] for r in rows] == ["rejected", "contract_violation"]
    assert json.loads(rows[0]["payload"])["lines"][0]["sku"] == "SH-001"
    assert [d["kind"] for d in data] == ["contract_violation"] and data[0]["first_seen"].endswith("+00:00")


# -- operator actions --------------------------------------------------------------------------------


def test_retry_requeues_once_with_a_fresh_budget(store, connections) -> None:
    ids = dead(store, connections, [stock_refusal("SH-001", 3), stock_refusal("TS-001", 4)])
    with store.session() as s:
        first = errorqueue.retry(s, ids, by="alice")
    with store.session() as s:
        second = errorqueue.retry(s, ids, by="bob")
        rows = list(s.scalars(select(Outbox)))
        entries = list(s.scalars(select(ErrorQueue)))
    assert first.changed == ids and second.changed == []
    assert second.skipped == [(i, "is retrying, not open") for i in ids]
    assert {(r.status, r.attempts) for r in rows} == {(OutboxStatus.PENDING, 0)}
    assert {(e.status, e.resolved_by) for e in entries} == {(ErrorStatus.RETRYING, "alice")}


def test_retry_by_fingerprint(store, connections) -> None:
    ids = dead(store, connections, [stock_refusal("SH-001", 3), stock_refusal("TS-001", 4),
                                    ContractViolation("answer had no FID")])
    with store.session() as s:
        print_ = s.get(ErrorQueue, ids[0]).fingerprint
    with store.session() as s:
        assert errorqueue.retry(s, fingerprint=print_).changed == ids[:2]
    with pytest.raises(ValueError, match="either"):
        with store.session() as s:
            errorqueue.retry(s, ids, fingerprint=print_)


def test_discard_needs_a_note_and_buries_the_row(store, connections) -> None:
    [entry_id] = dead(store, connections, [stock_refusal("SH-001", 3)])
    with pytest.raises(ValueError, match="note"):
        with store.session() as s:
            errorqueue.discard(s, [entry_id], note=" ")
    with store.session() as s:
        assert errorqueue.discard(s, [entry_id], note="posted by hand in Kingdee", by="carol").changed == [entry_id]
    with store.session() as s:
        entry = s.get(ErrorQueue, entry_id)
        assert entry.status == ErrorStatus.DISCARDED and entry.note == "posted by hand in Kingdee"
        assert s.get(Outbox, entry.outbox_id).status == OutboxStatus.DEAD
        assert errorqueue.retry(s, [entry_id]).skipped == [(entry_id, "is discarded, not open")]


# -- the command line ------------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path, store: Store):
    from erphub.cli import app

    config = tmp_path / "erphub.toml"
    config.write_text(f'[store]\nurl = "{store.engine.url.render_as_string(hide_password=False)}"\n',
                      encoding="utf-8")
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, ["--config", str(config), "errors", *args], catch_exceptions=False)
        return result

    yield run
    from connectors.logging import uninstall_redaction

    uninstall_redaction()
    logging.getLogger().handlers.clear()


def test_cli_list_show_retry_discard_export(cli, store, connections, tmp_path) -> None:
    register_secret(SECRET)
    try:
        ids = dead(store, connections, [stock_refusal("SH-001", 3), stock_refusal("TS-001", 4),
                                        Rejected(f"bad login {SECRET}", vendor_code="1")], memo=f"pw {SECRET}")
    finally:
        unregister_secret(SECRET)
    listed = cli("list", "--connection", "kd", "--status", "open")
    assert listed.exit_code == 0, listed.output
    assert "E_STOCK_NEGATIVE" in listed.output and "rejected" in listed.output
    with store.session() as s:
        print_ = s.get(ErrorQueue, ids[0]).fingerprint
    assert print_ in listed.output
    shown = cli("show", str(ids[2]))
    assert shown.exit_code == 0 and '"sku": "TS-002"' in shown.output and "pw ***" in shown.output
    assert cli("show", "999").exit_code == 1
    retried = cli("retry", "--fingerprint", print_)
    assert retried.exit_code == 0 and f"re-queued 2: {ids[0]}, {ids[1]}" in retried.output
    again = cli("retry", str(ids[0]))
    assert again.exit_code == 0 and f"skipped {ids[0]}: is retrying, not open" in again.output
    assert cli("discard", str(ids[2])).exit_code != 0  # a note is required
    discarded = cli("discard", str(ids[2]), "--note", "wrong user; posted by hand")
    assert discarded.exit_code == 0 and f"discarded 1: {ids[2]}" in discarded.output
    target = tmp_path / "errors.json"
    exported = cli("export", "--format", "json", "--output", str(target))
    assert exported.exit_code == 0
    assert [d["status"] for d in json.loads(target.read_text(encoding="utf-8"))] == ["retrying", "retrying",
                                                                                   "discarded"]
    as_csv = cli("export")
    assert as_csv.exit_code == 0 and as_csv.output.startswith("id,status,connection")
    for result in (listed, shown, retried, discarded, as_csv):
        assert SECRET not in result.output
    assert SECRET not in target.read_text(encoding="utf-8")
