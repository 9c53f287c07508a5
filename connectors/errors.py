"""The connector error taxonomy.

Every error says what the engine should do next (``action``), so business code only raises and
the retry policy in ``sync/`` reads one attribute instead of inspecting vendor envelopes or
HTTP status codes. Messages pass through :func:`connectors.redaction.redact_text`, so an error
can never carry a registered secret into a log line, the error queue or a report.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from connectors.redaction import redact_data, redact_text


class Action(StrEnum):
    """What the engine does with a failed call."""

    RETRY = "retry"              # try again with backoff
    RECONCILE = "reconcile"      # outcome unknown: ask find(key) before sending again
    DEFER = "defer"              # wait for something else to happen first (a dependency), then retry
    PAUSE = "pause"              # stop using the connection until an operator fixes it
    DEAD_LETTER = "dead_letter"  # park this record in the error queue; retrying will not help


class ConnectorError(Exception):
    """Base of every error a connector raises."""

    kind: ClassVar[str] = "error"
    action: ClassVar[Action] = Action.DEAD_LETTER

    def __init__(self, message: str, *, vendor_code: str | None = None, record: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        self.message = redact_text(message)
        self.vendor_code = vendor_code
        self.record = redact_text(record) if record else record
        self.details = redact_data(details or {})
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.action in (Action.RETRY, Action.RECONCILE, Action.DEFER)

    def __str__(self) -> str:
        parts = []
        if self.record:
            parts.append(f"{self.record}: ")
        if self.vendor_code:
            parts.append(f"[{self.vendor_code}] ")
        parts.append(self.message)
        return "".join(parts)


class Transient(ConnectorError):
    """Network failure, 5xx, timeout before the request was sent: retry with backoff."""

    kind = "transient"
    action = Action.RETRY


class RateLimited(Transient):
    """The vendor asked us to slow down. ``retry_after`` (seconds) is a floor for the next attempt."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class AuthError(ConnectorError):
    """Credentials refused (after at most one transparent re-login). Never retried."""

    kind = "auth"
    action = Action.PAUSE


class ConfigError(ConnectorError):
    """The connection's configuration is wrong (unknown organisation, bad form id...)."""

    kind = "config"
    action = Action.PAUSE


class Rejected(ConnectorError):
    """The vendor refused this record for a business reason. Retrying will not help."""

    kind = "rejected"
    action = Action.DEAD_LETTER


class DependencyMissing(ConnectorError):
    """A referenced record (item, warehouse, partner) is not mapped in the target yet."""

    kind = "dependency_missing"
    action = Action.DEFER


class Ambiguous(ConnectorError):
    """The request may have been applied but its answer was lost: check with find() first."""

    kind = "ambiguous"
    action = Action.RECONCILE


class ContractViolation(ConnectorError):
    """The vendor answered in a shape we do not understand: a bug or an API change."""

    kind = "contract_violation"
    action = Action.DEAD_LETTER


class WebhookRefused(ConnectorError):
    """An inbound webhook failed verification (bad signature, stale or missing timestamp).

    Raised by ``Connector.receive_webhook``; the hub answers ``http_status`` and enqueues
    nothing. Never raised by an outbound call, so it is not in ``ALL_ERRORS``.
    """

    kind = "webhook_refused"
    action = Action.DEAD_LETTER
    http_status: ClassVar[int] = 401


ALL_ERRORS: tuple[type[ConnectorError], ...] = (
    Transient, RateLimited, AuthError, ConfigError, Rejected, DependencyMissing, Ambiguous, ContractViolation,
)
