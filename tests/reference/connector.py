"""The reference connector: the full contract on connectors/http.py, in a few lines each."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr, ValidationError

from canonical import Movement, MovementKind, StockBalance
from connectors.base import Capabilities, CheckResult, ConnectionSettings, Connector, Entity, Page, Receipt, \
    RecordError
from connectors.errors import ConfigError, ConnectorError, ContractViolation, Rejected
from connectors.http import HttpClient
from tests.reference import mapping
from tests.reference.client import ReferenceClient

PATHS = {Entity.ITEMS: "/api/items", Entity.WAREHOUSES: "/api/warehouses", Entity.PARTNERS: "/api/partners",
         Entity.MOVEMENTS: "/api/documents"}
MAPPERS: dict[Entity, Callable[[Any], Any]] = {
    Entity.ITEMS: mapping.item, Entity.WAREHOUSES: mapping.warehouse, Entity.PARTNERS: mapping.partner,
    Entity.MOVEMENTS: mapping.document_to_movement,
}
WRITERS: dict[Entity, Callable[[Any], dict[str, Any]]] = {
    Entity.ITEMS: mapping.item_to_row, Entity.WAREHOUSES: mapping.warehouse_to_row,
}
MAX_PAGE = 100
MAX_UPSERT = 100


class ReferenceSettings(ConnectionSettings):
    platform: str = "reference"
    user: str
    password: SecretStr
    #: True: push sends the movement's key as ``Idempotency-Key`` and the server de-duplicates on
    #: it (one POST per push). False: push looks the key up first (a GET, then the POST), as for
    #: a vendor without a de-duplicating key (Kingdee, SAP B1).
    idempotency_header: bool = True


class ReferenceConnector(Connector):
    platform = "reference"
    Settings = ReferenceSettings
    client_class = ReferenceClient

    def __init__(self, settings: ReferenceSettings, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        http = HttpClient(settings.url, connect_timeout=settings.connect_timeout,
                          read_timeout=settings.read_timeout, verify=settings.verify_tls, name=self.name)
        self.client = self.client_class(http, user=settings.user, password=settings.password.get_secret_value())

    @property
    def capabilities(self) -> Capabilities:
        notes = ("push: one POST with Idempotency-Key (the server de-duplicates on the key)",) \
            if self.settings.idempotency_header else ("push: a lookup by key, then the POST",)
        return Capabilities(entities=frozenset(PATHS), movement_kinds=frozenset(k.value for k in MovementKind),
                            incremental=frozenset(PATHS), max_page_size=MAX_PAGE, posting_calls=1,
                            writable=frozenset(WRITERS), notes=notes)

    def check(self) -> CheckResult:
        self.client.login()
        body = self.client.call("GET", "/api/ping", idempotent=True)
        return CheckResult(ok=True, detail="logged in and pinged", server_version=body.get("version"))

    def _size(self, page_size: int | None) -> int:
        return max(1, min(page_size or self.settings.page_size, MAX_PAGE))

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        entity = Entity(entity)
        if entity not in PATHS:
            raise ContractViolation(f"{self.name}: cannot read {entity}")
        params = {"modified_since": since.isoformat()} if since is not None else {}
        mapper = MAPPERS[entity]
        for rows, nxt in self.client.pages(PATHS[entity], params=params, offset=resume, limit=self._size(page_size)):
            records, errors, stamps = [], [], []
            for row in rows:
                try:
                    record = mapper(row)
                except (ValidationError, KeyError, ValueError, TypeError) as exc:
                    errors.append(RecordError(entity.value, str(row.get("code") or row.get("number")), str(exc),
                                              raw=row))
                    continue
                records.append(record)
                if record.modified_at is not None:
                    stamps.append(record.modified_at)
            yield Page(tuple(records), resume=nxt, max_modified=max(stamps, default=None), errors=tuple(errors))

    def read_balances(self, *, warehouse: str | None = None, resume: str | None = None,
                      page_size: int | None = None) -> Iterator[Page[StockBalance]]:
        params = {"warehouse": warehouse} if warehouse else {}
        for rows, nxt in self.client.pages("/api/stock", params=params, offset=resume, limit=self._size(page_size)):
            yield Page(tuple(mapping.balance(r) for r in rows), resume=nxt)

    def find(self, key: str) -> Receipt | None:
        body = self.client.call("GET", "/api/documents", idempotent=True, params={"ext_key": key, "limit": 1})
        rows = body.get("rows") or []
        if not rows:
            return None
        doc = rows[0]
        return Receipt(key=key, document_id=str(doc["id"]), document_number=doc["number"], created=False,
                       status=doc.get("status"))

    def push(self, movement: Movement, key: str) -> Receipt:
        if self.settings.idempotency_header:  # the server de-duplicates on the key: one request
            return self._create(movement, key, idempotency_key=key)
        existing = self.find(key)
        if existing is not None:
            return existing
        return self._create(movement, key)

    def _create(self, movement: Movement, key: str, *, idempotency_key: str | None = None) -> Receipt:
        """POST the document; with ``idempotency_key`` the server answers the document an earlier
        request with that key created instead of creating another (``created=False``). Without it,
        a raw create. The POST stays non-idempotent for the HTTP layer either way: a lost answer is
        Ambiguous, and the engine looks the key up (``find``) before anything is sent again."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        body, resp = self.client.exchange("POST", "/api/documents", idempotent=False, headers=headers,
                                          json=mapping.movement_to_document(movement, key))
        replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
        return Receipt(key=key, document_id=str(body["id"]), document_number=body["number"], created=not replayed,
                       status=body.get("status"))

    def upsert(self, entity: Entity, records: Sequence[Any]) -> list[Receipt | ConnectorError]:
        entity = Entity(entity)
        if entity not in WRITERS:
            raise ConfigError(f"{self.name}: writing {entity} is not supported by the reference connector")
        results: list[Receipt | ConnectorError] = []
        for start in range(0, len(records), MAX_UPSERT):
            chunk = records[start:start + MAX_UPSERT]
            # the server applies each row on its own and answers per row, so a lost answer is
            # safe to send again: this call is idempotent
            body = self.client.call("POST", PATHS[entity], idempotent=True,
                                    json={"rows": [WRITERS[entity](r) for r in chunk]})
            answers = body.get("results")
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise ContractViolation(f"POST {PATHS[entity]}: expected {len(chunk)} results, got {answers!r:.200}")
            for record, answer in zip(chunk, answers, strict=True):
                if answer.get("ok") is True:
                    results.append(Receipt(key=record.natural_key, document_id=str(answer["code"]),
                                           document_number=str(answer["code"]), created=bool(answer.get("created")),
                                           status="changed" if answer.get("changed") else "unchanged"))
                else:
                    results.append(Rejected(str(answer.get("message") or answer.get("code")),
                                            vendor_code=answer.get("code"), record=record.natural_key,
                                            details={"field": answer.get("field")}))
        return results

    def close(self) -> None:
        self.client.http.close()
