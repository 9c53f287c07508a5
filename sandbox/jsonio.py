"""JSON in and out of werkzeug requests (decimals travel as strings)."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Request, Response


def decimal_text(value: Decimal) -> str:
    """Plain notation, never an exponent: ``Decimal("1E+1")`` → ``"10"``."""
    return format(value, "f")


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_default)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status=status, headers=headers, content_type="application/json; charset=utf-8")


def read_json(request: Request, *, decimals: bool = True) -> Any:
    """The request body as JSON; ``BadRequest`` says why not.

    Numbers with a fraction become ``Decimal`` (quantities), or ``float`` with ``decimals=False``.
    """
    raw = request.get_data()
    if not raw.strip():
        raise BadRequest("the request body is empty; expected JSON")
    try:
        return json.loads(raw, parse_float=Decimal if decimals else float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
