"""The connector contract (DESIGN.md §4).

A connector wires a vendor client (wire protocol only) to pure mapping functions and exposes
the same small surface for every vendor: ``check``, ``read``, ``read_balances``, ``push``,
``find`` and ``capabilities``. The engine, the comparison layer and the conformance suite
speak only this contract.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from connectors.errors import ConnectorError

if TYPE_CHECKING:
    from canonical import Movement, StockBalance

T = TypeVar("T")


class Entity(StrEnum):
    """What ``read`` can be asked for."""

    ITEMS = "items"
    WAREHOUSES = "warehouses"
    LOCATIONS = "locations"
    PARTNERS = "partners"
    MOVEMENTS = "movements"


@dataclass(frozen=True)
class RecordError:
    """A source record that could not be mapped; the page goes on without it."""

    entity: str
    record_key: str
    message: str
    field: str | None = None
    raw: Any = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of canonical records.

    ``resume`` is an opaque token that continues the read right after this page (``None`` on
    the last page); ``max_modified`` is the highest source modification time seen on the page,
    which the engine turns into the next watermark once the whole run succeeds.
    """

    records: tuple[T, ...]
    resume: str | None = None
    max_modified: datetime | None = None
    errors: tuple[RecordError, ...] = ()

    @property
    def last(self) -> bool:
        return self.resume is None


@dataclass(frozen=True)
class Receipt:
    """What the vendor created for an idempotency key."""

    key: str
    document_id: str
    document_number: str | None = None
    created: bool = True  # False when push() or find() found the document already there
    status: str | None = None  # vendor life-cycle status, e.g. Kingdee "C" (audited)
    # False when the document exists but its stock is not posted yet (a Kingdee bill saved or
    # submitted but not audited). The engine then calls push(key) again, which finishes the
    # life cycle of that same document instead of creating another one.
    posted: bool = True


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    server_version: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a connector supports, for the engine's planning and the trial report."""

    entities: frozenset[Entity]
    movement_kinds: frozenset[str]
    incremental: frozenset[Entity] = frozenset()
    balances: bool = True
    max_page_size: int = 1000
    max_batch: int = 1  # movements (or master records) per bulk call; 1 = no bulk endpoint
    # master data this connector can create or update with upsert() (migrations, master-data flows)
    writable: frozenset[Entity] = frozenset()
    rate_limit_per_second: float | None = None
    posting_calls: int = 1  # API calls to post one document (Kingdee Save+Submit+Audit = 3)
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP request a vendor pushed to the hub, exactly as received.

    The raw ``body`` is kept because vendors sign the bytes they sent (re-serialised JSON would
    not verify). ``headers`` keys are lower-case; ``query`` holds the URL's query parameters.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class WebhookEvent:
    """What a verified webhook says changed, decoded to canonical records.

    ``delivery_id`` is the vendor's id of this delivery (Jiandaoyun ``X-JDY-DeliverId``); the
    engine processes a delivery id once per connection. ``entity`` is None for events that carry
    no record (a connection test, a form-definition change). ``removed`` lists natural keys
    (codes, or movement references) the source deleted.
    """

    delivery_id: str
    operation: str
    entity: Entity | None
    records: tuple[Any, ...] = ()
    removed: tuple[str, ...] = ()
    errors: tuple[RecordError, ...] = ()
    occurred_at: datetime | None = None


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


# An IANA zone name such as "Asia/Shanghai", checked when the settings are loaded; vendors that
# send zone-less local times are read in the zone their connection declares.
TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


class ConnectionSettings(BaseModel):
    """Settings every connection has; each connector extends this with its vendor's own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: str
    url: str = Field(description="Base URL of the vendor API")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a TCP connection")
    read_timeout: float = Field(30.0, gt=0, description="Seconds to wait for an answer")
    page_size: int = Field(500, ge=1, description="Records per read request")
    rate_limit_per_second: float | None = Field(None, gt=0, description="Keep below the vendor's limit")
    verify_tls: bool | str = Field(True, description="True, False is refused, or a CA bundle path")


class Connector(abc.ABC):
    """The contract. Subclasses set ``platform`` and ``Settings`` and implement the methods."""

    platform: ClassVar[str]
    Settings: ClassVar[type[ConnectionSettings]] = ConnectionSettings

    def __init__(self, settings: ConnectionSettings, *, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or settings.platform

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def check(self) -> CheckResult:
        """Authenticate and make one cheap read. Bad credentials raise AuthError, other failures
        their own error; ``ok=False`` is for a reachable system that reports itself unfit (e.g. a
        licence about to expire), with the reason in ``detail``."""

    @abc.abstractmethod
    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        """Pages of canonical records changed at or after ``since`` (all when None).

        ``since`` is inclusive: a record stamped exactly at the watermark is returned again (the
        engine de-duplicates by content hash), and a ``since`` in the future yields one empty
        last page. A resume token is self-contained: it carries the ``since`` and page size of
        the read it belongs to, so ``read(entity, resume=token)`` continues right after the page
        that returned it and ignores ``since``. ``page_size`` above ``capabilities.max_page_size``
        is clamped. An entity outside ``capabilities.entities`` raises ``ConfigError``.
        """

    @abc.abstractmethod
    def read_balances(self, *, warehouse: str | None = None, resume: str | None = None,
                      page_size: int | None = None) -> Iterator[Page[StockBalance]]:
        """Pages of current stock balances."""

    @abc.abstractmethod
    def push(self, movement: Movement, key: str) -> Receipt:
        """Create and post the vendor document for ``movement``. Idempotent on ``key``.

        The key is written to the document (bill number, reference field or user field, as the
        connection is configured) together with ``movement.reference``, so that ``find`` and
        incremental reads can both recognise it. A key already used returns that document's
        receipt (``created=False``) after finishing its posting if an earlier attempt stopped
        half-way; the engine never reuses a key for different content (keys are fixed per
        movement and target when the movement enters the outbox). A business refusal raises
        ``Rejected`` with the vendor's code.
        """

    @abc.abstractmethod
    def find(self, key: str) -> Receipt | None:
        """The vendor document already created for ``key`` (``created=False``, ``posted`` telling
        whether its stock is posted), or None. This is how the engine settles an ``Ambiguous``
        outcome before it sends anything again."""

    def upsert(self, entity: Entity, records: Sequence[Any]) -> list[Receipt | ConnectorError]:
        """Create or update master records (``Item``, ``Warehouse``, ``Partner``...), keyed by their
        natural key (the vendor code); one result per input, in order.

        Idempotent by nature: a record whose vendor twin already has the same content is left
        alone (``created=False``); one that differs is updated; a missing one is created. An
        entity outside ``capabilities.writable`` raises ``ConfigError``.
        """
        from connectors.errors import ConfigError

        raise ConfigError(f"{self.name}: writing {entity} is not supported by the {self.platform} connector")

    def push_many(self, batch: Sequence[tuple[Movement, str]]) -> list[Receipt | ConnectorError]:
        """Push several movements; one result per input, in order. Bulk endpoints override this."""
        results: list[Receipt | ConnectorError] = []
        for movement, key in batch:
            try:
                results.append(self.push(movement, key))
            except ConnectorError as exc:
                results.append(exc)
        return results

    def receive_webhook(self, request: WebhookRequest) -> WebhookEvent:
        """Verify and decode a webhook the vendor pushed (signature, timestamp freshness).

        Raises ``WebhookRefused`` when the request fails verification, ``ContractViolation``
        when it verifies but cannot be understood. No write and no record read happens here (the
        engine re-reads through ``read`` if it needs more); after verification a connector may read
        and cache the form or schema definitions it needs to decode the payload, and a failure of
        that read raises its own error, so the hub answers non-2xx and the vendor sends it again.
        """
        from connectors.errors import ConfigError

        raise ConfigError(f"{self.name}: the {self.platform} connector does not take webhooks")

    def close(self) -> None:
        """Release sessions and sockets."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
