"""Keep secrets out of logs, exception text and reports.

Two nets: every secret value the configuration resolves is registered here and replaced
wherever it appears, and well-known secret-bearing keys (password, token, cookies, signatures)
are masked by pattern even when their value was never registered.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"

# Keys whose values are secrets in any vendor's wire format (RELIABILITY.md §4.1).
SECRET_KEYS = (
    "password", "passwd", "pwd", "app_secret", "appsecret", "appsec", "app_sec", "secret", "client_secret",
    "token", "access_token", "refresh_token", "api_key", "apikey", "authorization", "cookie", "set-cookie",
    "b1session", "routeid", "kdservice-sessionid", "asp.net_sessionid", "kdsvcsessionid", "sessionid",
    "sign", "signature", "x-kdapi-signature", "x-api-signature",
)
_SECRET_KEY_SET = frozenset(SECRET_KEYS)
_KEY_ALT = "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))
# "key": "value" (JSON), key=value (query strings, form bodies, cookies), key: value (headers)
_JSON_PAIR = re.compile(rf'("(?:{_KEY_ALT})"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
_KV_PAIR = re.compile(rf'(?<![\w.-])((?:{_KEY_ALT})\s*[=:]\s*)(?!\*\*\*)([^\s&;,"\']+)', re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

_lock = threading.Lock()
_values: set[str] = set()
_values_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it shows up later."""
    global _values_pattern
    if not value or len(value) < 4:  # masking tiny strings would garble ordinary text
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        ordered = sorted(_values, key=len, reverse=True)
        _values_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact_text(text: str) -> str:
    """Mask registered secret values and secret-looking key/value pairs in free text."""
    if not text:
        return text
    pattern = _values_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _JSON_PAIR.sub(rf'\1"{MASK}"', text)
    return _KV_PAIR.sub(rf"\1{MASK}", text)


def is_secret_key(key: str) -> bool:
    return key.lower() in _SECRET_KEY_SET


def redact_data(value: Any) -> Any:
    """A copy of a JSON-like structure with secret keys masked and secret values scrubbed."""
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) else redact_data(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
