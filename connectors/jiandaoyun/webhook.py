"""Verifying a Jiandaoyun data push (数据推送, ``vendors/jiandaoyun.md`` §8). Pure: no vendor call.

The vendor POSTs ``<url>?timestamp=<unix s>&nonce=<random>`` with the JSON body
``{"op", "opTime", "data"}`` and the headers ``X-JDY-Signature`` =
``sha1hex(f"{nonce}:{raw body}:{secret}:{timestamp}")`` and ``X-JDY-DeliverId``. The signature
is checked over the raw bytes as received (re-serialised JSON would not verify) with a
constant-time compare; the timestamp must be a whole number of seconds no further than
``max_age`` from the moment the request was received, in either direction.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.base import WebhookRequest
from connectors.errors import ContractViolation, WebhookRefused


@dataclass(frozen=True)
class Push:
    """A verified push: its DeliverId, op, opTime (UTC) and data (None for a connection test)."""

    delivery_id: str
    op: str
    op_time: datetime | None
    data: Any


def signature(nonce: str, body: str, secret: str, timestamp: str) -> str:
    return hashlib.sha1(f"{nonce}:{body}:{secret}:{timestamp}".encode()).hexdigest()


def verify(request: WebhookRequest, secret: str | None, *, max_age: float) -> Push:
    """The verified push, or ``WebhookRefused`` saying what failed (never echoing the secret)."""
    if not secret:
        raise WebhookRefused("no webhook_secret is configured for this connection; pushes cannot be verified")
    headers = {k.lower(): v for k, v in request.headers.items()}
    delivery_id = (headers.get("x-jdy-deliverid") or "").strip()
    given = (headers.get("x-jdy-signature") or "").strip()
    timestamp = (request.query.get("timestamp") or "").strip()
    nonce = request.query.get("nonce")
    if not delivery_id:
        raise WebhookRefused("the push has no X-JDY-DeliverId header")
    if not given:
        raise WebhookRefused("the push has no X-JDY-Signature header")
    if nonce is None or not nonce.strip():
        raise WebhookRefused("the push URL has no nonce parameter")
    if not timestamp.isdigit():
        raise WebhookRefused(f"the push timestamp {timestamp[:20]!r} is missing or not whole seconds")
    received = request.received_at.timestamp()
    skew = received - int(timestamp)
    if skew > max_age:
        raise WebhookRefused(f"the push timestamp is {skew:.0f} s old (at most {max_age:g} s accepted)")
    if -skew > max_age:
        raise WebhookRefused(f"the push timestamp is {-skew:.0f} s in the future (at most {max_age:g} s accepted)")
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRefused("the push body is not UTF-8") from None
    expected = signature(nonce, body, secret, timestamp)
    if not hmac.compare_digest(expected.encode(), given.lower().removeprefix("sha1=").encode()):
        raise WebhookRefused("the push signature does not match the body and the configured secret")
    try:
        event = json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise ContractViolation(f"a verified push is not JSON ({exc})") from None
    if not isinstance(event, dict) or not isinstance(event.get("op"), str):
        raise ContractViolation("a verified push has no op")
    op_time = event.get("opTime")
    when = None
    if isinstance(op_time, (int, Decimal)) and not isinstance(op_time, bool):
        when = datetime.fromtimestamp(float(op_time) / 1000.0, tz=UTC)
    return Push(delivery_id, event["op"], when, event.get("data"))
