"""The webhook intake (sync.webhooks.accept, sync.webhook_server) against a test-only connector.

:class:`HookConnector` is the reference connector plus ``receive_webhook``: an HMAC-SHA256
signature of ``"{timestamp}." + raw body`` in ``X-Hook-Signature``, the timestamp in the query
string (refused beyond ±5 minutes), the delivery id in ``X-Hook-Delivery`` and a JSON body
``{"op", "entity", "records", "removed"}`` of canonical records. Two reference ERPs are the
targets; deliveries are checked with the history checker (lost = 0, duplicated = 0).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select, update

import canonical
from connectors.base import Entity, RecordError, WebhookEvent, WebhookRequest
from connectors.errors import ContractViolation, WebhookRefused
from sync import metrics
from sync.connections import Connections
from sync.pull import pull
from sync.push import movement_of
from sync.store import (
    ErrorQueue,
    IdMap,
    Item,
    Movement,
    Outbox,
    Store,
    Warehouse,
    WebhookDelivery,
    utcnow,
)
from sync.webhook_server import WebhookApp, serve
from sync.webhooks import accept, movement_targets
from tests.conformance.kit import movement
from tests.reference.connector import ReferenceConnector, ReferenceSettings
from tests.reference.simulator import PASSWORD, USER
from tests.sync.conftest import REFERENCE, Systems
from tests.sync.test_delivery_history import History, drain, fast_policy
from tests.sync.test_faults import pg_store  # noqa: F401 - the PostgreSQL store fixture

HOOK_SECRET = "hook-secret-3f9a7c"
TOLERANCE = timedelta(minutes=5)


# -- the test-only connector and its sender ---------------------------------------------------------


class HookSettings(ReferenceSettings):
    platform: str = "reference-hooks"
    webhook_secret: SecretStr = SecretStr(HOOK_SECRET)


MODELS: dict[Entity, type[canonical.CanonicalModel]] = {
    Entity.ITEMS: canonical.Item, Entity.WAREHOUSES: canonical.Warehouse, Entity.PARTNERS: canonical.Partner,
    Entity.MOVEMENTS: canonical.Movement,
}


def signature(secret: str, stamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class HookConnector(ReferenceConnector):
    """The reference connector with webhooks (see the module doc)."""

    platform = "reference-hooks"
    Settings = HookSettings

    def receive_webhook(self, request: WebhookRequest) -> WebhookEvent:
        stamp = request.query.get("timestamp", "")
        given = request.headers.get("x-hook-signature", "")
        delivery = request.headers.get("x-hook-delivery", "")
        if not (stamp and given and delivery):
            raise WebhookRefused(f"{self.name}: timestamp, signature or delivery id missing")
        secret = self.settings.webhook_secret.get_secret_value()  # type: ignore[attr-defined]
        if not hmac.compare_digest(signature(secret, stamp, request.body), given):
            raise WebhookRefused(f"{self.name}: signature does not match")
        try:
            sent = datetime.fromtimestamp(int(stamp), UTC)
        except ValueError:
            raise WebhookRefused(f"{self.name}: timestamp {stamp[:20]!r} is not a number") from None
        if abs(request.received_at - sent) > TOLERANCE:
            raise WebhookRefused(f"{self.name}: timestamp {sent.isoformat()} is stale")
        try:
            body = json.loads(request.body)
            entity = Entity(body["entity"]) if body.get("entity") else None
            operation = str(body["op"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractViolation(f"{self.name}: webhook body not understood: {exc}") from None
        records, errors = [], []
        for raw in body.get("records", []):
            try:
                records.append(MODELS[entity].model_validate(raw))  # type: ignore[index]
            except ValidationError as exc:
                key = str(raw.get("reference") or raw.get("sku") or raw.get("code"))
                errors.append(RecordError(entity.value, key, str(exc), raw=raw))  # type: ignore[union-attr]
        return WebhookEvent(delivery_id=delivery, operation=operation, entity=entity, records=tuple(records),
                            removed=tuple(body.get("removed", ())), errors=tuple(errors))


def body_of(op: str, entity: str | None, records: Sequence[Any] = (), removed: Sequence[str] = ()) -> bytes:
    plain = [r.model_dump(mode="json", exclude_none=True) if hasattr(r, "model_dump") else r for r in records]
    return json.dumps({"op": op, "entity": entity, "records": plain, "removed": list(removed)},
                      separators=(",", ":"), ensure_ascii=False).encode()


def signed(body: bytes, *, delivery: str | None = None, at: datetime | None = None, secret: str = HOOK_SECRET,
           received_at: datetime | None = None) -> WebhookRequest:
    """A request as the vendor would sign it, received now (or at ``received_at``)."""
    stamp = str(int((at or utcnow()).timestamp()))
    return WebhookRequest(method="POST", path="/webhooks/src", query={"timestamp": stamp},
                          headers={"content-type": "application/json",
                                   "x-hook-signature": signature(secret, stamp, body),
                                   "x-hook-delivery": delivery or uuid.uuid4().hex},
                          body=body, received_at=received_at or utcnow())


def post(url: str, body: bytes, *, delivery: str | None = None, at: datetime | None = None,
         secret: str = HOOK_SECRET) -> requests.Response:
    """The same request over a real socket (header names as a client sends them, query in the URL)."""
    request = signed(body, delivery=delivery, at=at, secret=secret)
    headers = {"Content-Type": "application/json", "X-Hook-Signature": request.headers["x-hook-signature"],
               "X-Hook-Delivery": request.headers["x-hook-delivery"]}
    return requests.post(f"{url}/webhooks/src", params=dict(request.query), data=body, headers=headers, timeout=10)


@dataclass(frozen=True)
class Flow:
    name: str
    kind: str
    source: str
    targets: tuple[str, ...]
    entities: tuple[str, ...] = ()
    every: timedelta = timedelta(minutes=1)


FLOWS = (
    Flow("moves_a", "movements", "src", ("t1",)),
    Flow("moves_b", "movements", "src", ("t1", "t2")),
    Flow("moves_other", "movements", "t1", ("t2",)),   # another source: not a webhook route of src
    Flow("master", "master_data", "src", ("t2",), ("items",)),  # master data: never a movement route
)


@dataclass
class Intake:
    store: Store
    connections: Connections
    systems: Systems
    flows: Sequence[Flow] = FLOWS
    history: History = field(init=False)

    def __post_init__(self) -> None:
        self.history = History(self.store, self.systems)

    def accept(self, request: WebhookRequest, flows: Sequence[Flow] | None = None) -> Any:
        return accept(self.store, self.connections, "src", request, flows=self.flows if flows is None else flows)


def wire(store: Store, systems: Callable[..., Systems]) -> Intake:
    """Source ``src`` (webhooks), targets ``t1`` and ``t2`` (reference ERPs), all on ``store``."""
    running = systems(t1=REFERENCE, t2=REFERENCE)
    settings = dict(running.connections.settings)
    settings["src"] = HookSettings(url=settings["t1"].url, user=USER, password=PASSWORD)

    def factory(name: str, s: Any) -> Any:
        return HookConnector(s, name=name) if name == "src" else running.targets[name].build(s)

    connections = Connections(store, settings, factory=factory)
    return Intake(store, connections, Systems(connections, running.sims, running.clock, running.targets))


@pytest.fixture
def intake(store: Store, systems: Callable[..., Systems]) -> Iterator[Intake]:
    wired = wire(store, systems)
    yield wired
    wired.connections.close()


def counts(store: Store) -> dict[str, int]:
    """Rows of every table the intake may write."""
    with store.session() as s:
        return {model.__tablename__: int(s.scalar(select(func.count()).select_from(model)) or 0)
                for model in (WebhookDelivery, Movement, Outbox, ErrorQueue, Item, Warehouse, IdMap)}


def outbox_by_target(store: Store) -> dict[tuple[str, str], int]:
    from sync.store import Connection

    with store.session() as s:
        rows = s.execute(select(Movement.reference, Connection.name, func.count())
                         .join(Outbox, Outbox.movement_id == Movement.id)
                         .join(Connection, Connection.id == Outbox.target_connection_id)
                         .group_by(Movement.reference, Connection.name)).all()
    return {(ref, target): n for ref, target, n in rows}


# -- routing ----------------------------------------------------------------------------------------


def test_movement_targets_are_the_movement_flows_of_that_source() -> None:
    assert movement_targets(FLOWS, "src") == ["t1", "t2"]
    assert movement_targets(FLOWS, "t1") == ["t2"]
    assert movement_targets(FLOWS, "t2") == []


def test_a_movement_is_enqueued_for_every_target_once_and_delivered_once(intake: Intake) -> None:
    # Given a sales issue pushed by the source
    issue = movement("sales_issue", lines=[("TS-001", "2")], source="WH01")
    # When it arrives, and again under a new delivery id (the vendor pushed the record twice)
    first = intake.accept(signed(body_of("data_create", "movements", [issue])))
    again = intake.accept(signed(body_of("data_update", "movements", [issue])))
    # Then both are accepted, and the movement has one outbox row per target of src's movement flows
    assert (first.status, first.body, first.written) == (200, "ok", 1)
    assert (again.status, again.outcome) == (200, "accepted")
    assert outbox_by_target(intake.store) == {(issue.reference, "t1"): 1, (issue.reference, "t2"): 1}
    with intake.store.session() as s:
        stored = s.scalars(select(Movement)).one()
        assert movement_of(stored.payload) == issue
        assert stored.source_connection_id == intake.connections.id("src")
    # And delivery posts it once in each target: nothing lost, nothing duplicated
    drain(intake.store, intake.connections, fast_policy())
    report = intake.history.check()
    report.assert_clean()
    assert report.sent == 2


def test_changed_content_under_the_same_reference_goes_to_the_error_queue(intake: Intake) -> None:
    # Given a movement taken in
    issue = movement("sales_issue", lines=[("TS-001", "2")], source="WH01")
    intake.accept(signed(body_of("data_create", "movements", [issue])))
    # When the source pushes the same reference with another quantity
    changed = issue.replace(lines=(issue.lines[0].replace(quantity=Decimal(3)),))
    outcome = intake.accept(signed(body_of("data_update", "movements", [changed])))
    # Then the delivery is taken in, the change is a dead letter naming the record, the outbox unchanged
    assert (outcome.status, outcome.failed) == (200, 1)
    with intake.store.session() as s:
        entry = s.scalars(select(ErrorQueue)).one()
    assert entry.record_key == issue.reference and "different content" in entry.message
    assert len(outbox_by_target(intake.store)) == 2


def test_a_movement_from_a_source_without_a_movements_flow_is_a_dead_letter(intake: Intake) -> None:
    issue = movement("sales_issue", lines=[("TS-001", "1")], source="WH01")
    outcome = intake.accept(signed(body_of("data_create", "movements", [issue])),
                            flows=[f for f in FLOWS if f.kind != "movements"])
    assert (outcome.status, outcome.failed) == (200, 1)
    with intake.store.session() as s:
        entry = s.scalars(select(ErrorQueue)).one()
        assert s.scalar(select(func.count()).select_from(Outbox)) == 0
    assert entry.record_key == issue.reference and "no movements flow takes movements from src" in entry.message
    assert entry.payload["raw"]["reference"] == issue.reference  # the record is kept, nothing lost


# -- master data ------------------------------------------------------------------------------------


def test_master_data_is_stored_and_bound_as_a_pull_stores_it(intake: Intake, tmp_path) -> None:
    # Given items and warehouses pushed by the source
    items = [canonical.Item(sku="HOOK-1", name="推送物料", base_unit="PCS"),
             canonical.Item(sku="HOOK-2", name="Pushed 2", base_unit="KG", spec="5kg")]
    warehouse = canonical.Warehouse(code="WH-H", name="Hook warehouse")
    # When they arrive
    assert intake.accept(signed(body_of("data_create", "items", items))).written == 2
    assert intake.accept(signed(body_of("data_create", "warehouses", [warehouse]))).written == 1
    # Then the store holds them exactly as a pull of the same records from src does
    with intake.store.session() as s:
        stored = {i.sku: (i.payload, i.content_hash, i.source_connection_id) for i in s.scalars(select(Item))}
        bound = {(m.entity, m.canonical_id, m.external_id) for m in s.scalars(select(IdMap))}
    src = intake.connections.id("src")
    assert stored == {i.sku: (i.model_dump(mode="json"), i.content_hash(), src) for i in items}
    assert bound == {("items", "HOOK-1", "HOOK-1"), ("items", "HOOK-2", "HOOK-2"), ("warehouses", "WH-H", "WH-H")}

    class Pages(HookConnector):
        def read(self, entity, **_: Any):  # type: ignore[override]
            from connectors.base import Page

            yield Page(tuple(items) if entity == Entity.ITEMS else (warehouse,))

    with Store.open(f"sqlite:///{tmp_path / 'pulled.db'}") as other:
        other.upgrade()
        with Connections(other, {"src": intake.connections.settings["src"]},
                         factory=lambda n, s: Pages(s, name=n)) as pulled:
            pull(other, pulled, "src", "items", mode="full")
            pull(other, pulled, "src", "warehouses", mode="full")
        with other.session() as s:
            assert {i.sku: (i.payload, i.content_hash) for i in s.scalars(select(Item))} == \
                {k: v[:2] for k, v in stored.items()}
            assert {(m.entity, m.canonical_id, m.external_id) for m in s.scalars(select(IdMap))} == bound


def test_records_that_fail_mapping_go_to_the_error_queue_and_the_rest_is_stored(intake: Intake) -> None:
    good = canonical.Item(sku="HOOK-OK", name="fine", base_unit="PCS")
    bad = {"sku": "HOOK-BAD", "name": "odd unit", "base_unit": "BARREL-OF-MONKEYS"}
    outcome = intake.accept(signed(body_of("data_create", "items", [good, bad])))
    assert (outcome.status, outcome.records, outcome.written, outcome.failed) == (200, 2, 1, 1)
    with intake.store.session() as s:
        assert list(s.scalars(select(Item.sku))) == ["HOOK-OK"]
        entry = s.scalars(select(ErrorQueue)).one()
    assert (entry.kind, entry.entity, entry.record_key) == ("mapping", "items", "HOOK-BAD")
    assert entry.payload["field"] == "base_unit" and entry.payload["raw"]["sku"] == "HOOK-BAD"


def test_removed_records_are_recorded_and_nothing_is_deleted(intake: Intake) -> None:
    item = canonical.Item(sku="HOOK-9", name="kept", base_unit="PCS")
    intake.accept(signed(body_of("data_create", "items", [item])))
    outcome = intake.accept(signed(body_of("data_remove", "items", removed=["HOOK-9"]), delivery="rm-1"))
    assert (outcome.status, outcome.body) == (200, "ok")
    with intake.store.session() as s:
        assert list(s.scalars(select(Item.sku))) == ["HOOK-9"]
        row = s.scalars(select(WebhookDelivery).where(WebhookDelivery.delivery_id == "rm-1")).one()
    assert (row.operation, row.entity, row.removed) == ("data_remove", "items", {"keys": ["HOOK-9"]})


def test_an_event_without_records_is_recorded(intake: Intake) -> None:
    outcome = intake.accept(signed(body_of("data_test", None), delivery="ping"))
    assert (outcome.status, outcome.records) == (200, 0)
    assert counts(intake.store)["webhook_delivery"] == 1


# -- duplicates and refusals -------------------------------------------------------------------------


def test_a_duplicate_delivery_id_writes_nothing(intake: Intake) -> None:
    # Given a delivery taken in
    item = canonical.Item(sku="HOOK-D", name="once", base_unit="PCS")
    body = body_of("data_create", "items", [item])
    with metrics.use_counters() as counted:
        assert intake.accept(signed(body, delivery="d-1")).outcome == "accepted"
        before = counts(intake.store)
        # When the same delivery id comes again, even with other content
        other = body_of("data_create", "items", [item.replace(name="twice")])
        again = intake.accept(signed(other, delivery="d-1"))
    # Then it is answered 200 "duplicate" and nothing at all is written
    assert (again.status, again.body, again.outcome) == (200, "duplicate", "duplicate")
    assert counts(intake.store) == before
    with intake.store.session() as s:
        assert s.scalars(select(Item.payload)).one()["name"] == "once"
    assert counted.webhooks_received.labels("src")._value.get() == 2
    assert counted.webhooks_duplicate.labels("src")._value.get() == 1


def test_the_sweeper_forgets_delivery_ids_past_their_retention_and_nothing_is_enqueued_twice(intake: Intake) -> None:
    from sync.actors import Runtime
    from sync.webhooks import DELIVERY_RETENTION

    # Given two deliveries of movements, one taken in long ago
    old, new = (movement("sales_issue", lines=[("TS-001", "1")], source="WH01") for _ in range(2))
    assert intake.accept(signed(body_of("data_create", "movements", [old]), delivery="d-old")).outcome == "accepted"
    assert intake.accept(signed(body_of("data_create", "movements", [new]), delivery="d-new")).outcome == "accepted"
    with intake.store.session() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.delivery_id == "d-old")
                  .values(received_at=utcnow() - DELIVERY_RETENTION - timedelta(hours=1)))
    # When the lease sweeper runs
    Runtime(intake.store, intake.connections).sweep()
    # Then only the recent delivery id is remembered; the old record pushed again later is
    # accepted as a delivery but enqueues nothing new (enqueue is idempotent on the reference)
    with intake.store.session() as s:
        assert s.scalars(select(WebhookDelivery.delivery_id)).all() == ["d-new"]
    before = outbox_by_target(intake.store)
    assert intake.accept(signed(body_of("data_create", "movements", [old]), delivery="d-old")).outcome == "accepted"
    assert outbox_by_target(intake.store) == before


@pytest.mark.parametrize("spoil", ["signature", "secret", "stale", "future", "no_delivery_id", "no_timestamp"])
def test_a_request_that_fails_verification_is_refused_and_writes_nothing(intake: Intake, caplog, spoil) -> None:
    issue = movement("sales_issue", lines=[("TS-001", "1")], source="WH01")
    body = body_of("data_create", "movements", [issue])
    request = signed(body, secret="not-the-secret" if spoil == "secret" else HOOK_SECRET,
                     at=utcnow() - timedelta(minutes=6) if spoil == "stale"
                     else utcnow() + timedelta(minutes=6) if spoil == "future" else None)
    headers, query = dict(request.headers), dict(request.query)
    if spoil == "signature":
        headers["x-hook-signature"] = "0" * 64
    if spoil == "no_delivery_id":
        del headers["x-hook-delivery"]
    if spoil == "no_timestamp":
        query.clear()
    request = WebhookRequest(request.method, request.path, query, headers, body, request.received_at)
    before = counts(intake.store)
    with metrics.use_counters() as counted:
        outcome = intake.accept(request)
    assert (outcome.status, outcome.body, outcome.outcome) == (401, "refused", "refused")
    assert counts(intake.store) == before
    assert counted.webhooks_refused.labels("src")._value.get() == 1
    assert "webhook refused (401)" in caplog.text
    assert HOOK_SECRET not in caplog.text


def test_concurrent_copies_of_one_delivery_are_taken_in_once_sqlite(intake: Intake) -> None:
    _concurrent_copies(intake)


@pytest.mark.postgres
def test_concurrent_copies_of_one_delivery_are_taken_in_once_postgres(store, systems, pg_store) -> None:  # noqa: F811
    wired = wire(pg_store, systems)
    try:
        _concurrent_copies(wired)
    finally:
        wired.connections.close()


def _concurrent_copies(intake: Intake, copies: int = 6) -> None:
    # Given one delivery sent by several vendor retries at the same moment
    issue = movement("sales_issue", lines=[("TS-002", "1")], source="WH01")
    request = signed(body_of("data_create", "movements", [issue]), delivery="race-1")
    intake.connections.id("src"), intake.connections.id("t1"), intake.connections.id("t2")
    barrier = threading.Barrier(copies)
    outcomes: list[Any] = []

    def deliver() -> None:
        barrier.wait()
        outcomes.append(intake.accept(request))

    threads = [threading.Thread(target=deliver) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then exactly one takes it in, the others are duplicates, and one row per target is queued
    assert sorted(o.outcome for o in outcomes) == ["accepted"] + ["duplicate"] * (copies - 1)
    assert all(o.status == 200 for o in outcomes)
    assert outbox_by_target(intake.store) == {(issue.reference, "t1"): 1, (issue.reference, "t2"): 1}
    assert counts(intake.store)["webhook_delivery"] == 1


# -- other answers ----------------------------------------------------------------------------------


def test_a_verified_body_that_is_not_understood_is_kept_in_the_error_queue(intake: Intake) -> None:
    outcome = intake.accept(signed(b'{"entity": "items"}', delivery="odd"))
    assert (outcome.status, outcome.outcome) == (400, "invalid")
    with intake.store.session() as s:
        entry = s.scalars(select(ErrorQueue)).one()
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    assert (entry.entity, entry.kind) == ("webhook", "contract_violation")
    assert entry.payload["raw"]["body"] == '{"entity": "items"}'


def test_unknown_connections_and_connectors_without_webhooks_are_404(intake: Intake) -> None:
    request = signed(body_of("data_test", None))
    assert accept(intake.store, intake.connections, "nope", request).status == 404
    answer = accept(intake.store, intake.connections, "t1", request)  # the plain reference connector
    assert (answer.status, answer.body) == (404, "this connection does not take webhooks")
    assert counts(intake.store)["webhook_delivery"] == 0


def test_a_failure_while_taking_in_rolls_everything_back_and_answers_500(intake: Intake, monkeypatch) -> None:
    issue = movement("sales_issue", lines=[("TS-001", "1")], source="WH01")
    request = signed(body_of("data_create", "movements", [issue]), delivery="fails-once")
    from sync import webhooks

    real = webhooks.store_records

    def broken(session, *args, **kwargs):
        real(session, *args, **kwargs)  # the movement and its outbox rows are written, then
        raise RuntimeError("disk full")

    monkeypatch.setattr(webhooks, "store_records", broken)
    assert intake.accept(request).status == 500
    assert counts(intake.store) == {**counts(intake.store), "webhook_delivery": 0, "movement": 0, "outbox": 0}
    # When the vendor delivers it again, it is taken in
    monkeypatch.setattr(webhooks, "store_records", real)
    assert intake.accept(request).outcome == "accepted"
    assert len(outbox_by_target(intake.store)) == 2


# -- the HTTP receiver ------------------------------------------------------------------------------


def test_the_receiver_over_a_real_socket(intake: Intake) -> None:
    item = canonical.Item(sku="HOOK-HTTP", name="over http", base_unit="PCS")
    body = body_of("data_create", "items", [item])
    with serve(intake.store, intake.connections, intake.flows, max_body=4096) as server:
        url = server.url
        assert requests.get(f"{url}/health", timeout=5).text == "ok"
        # signed over the raw bytes, header names in any case, timestamp in the query string
        answer = post(url, body, delivery="http-1")
        assert (answer.status_code, answer.text) == (200, "ok")
        assert post(url, body, delivery="http-1").text == "duplicate"
        assert post(url, body, secret="wrong").status_code == 401
        assert requests.get(f"{url}/webhooks/src", timeout=5).status_code == 405
        assert requests.post(f"{url}/elsewhere", data=b"{}", timeout=5).status_code == 404
        assert requests.post(f"{url}/webhooks/", data=b"{}", timeout=5).status_code == 404
        # a body over the limit: declared (waitress) or streamed without a length (the app)
        assert requests.post(f"{url}/webhooks/src", data=b"x" * 5000, timeout=5).status_code == 413
        chunks = (b"x" * 1000 for _ in range(5))
        assert requests.post(f"{url}/webhooks/src", data=chunks, timeout=5).status_code == 413
    with intake.store.session() as s:
        assert list(s.scalars(select(Item.sku))) == ["HOOK-HTTP"]
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)  # closed


def test_the_app_keeps_the_raw_body_lower_cases_headers_and_parses_the_query(intake: Intake, monkeypatch) -> None:
    from werkzeug.test import EnvironBuilder

    seen: list[WebhookRequest] = []
    import sync.webhook_server as server_module

    def record(store, connections, name, request, *, flows):
        seen.append(request)
        from sync.webhooks import WebhookOutcome

        return WebhookOutcome(200, "ok", "accepted")

    monkeypatch.setattr(server_module, "accept", record)
    app = WebhookApp(intake.store, intake.connections)
    raw = b'{"a": "\\u5355", "b":1}  '
    environ = EnvironBuilder(path="/webhooks/src", method="POST", query_string="timestamp=17&nonce=ab&nonce=cd",
                             headers={"X-JDY-Signature": "S", "X-JDY-DeliverId": "D"}, data=raw).get_environ()
    status: list[str] = []
    assert b"".join(app(environ, lambda s, h: status.append(s))) == b"ok"
    assert status == ["200 OK"]
    (request,) = seen
    assert request.body == raw and request.method == "POST" and request.path == "/webhooks/src"
    assert request.query == {"timestamp": "17", "nonce": "ab"}
    assert request.headers["x-jdy-signature"] == "S" and request.headers["x-jdy-deliverid"] == "D"
    assert request.received_at.tzinfo is not None
