"""Keep secrets out of logs, exception text and reports.

Two nets: every secret value the configuration resolves is registered here and replaced
wherever it appears (also in its URL-encoded and JSON-escaped forms), and well-known
secret-bearing keys (password, token, cookies, signatures) are masked by pattern even when
their value was never registered.

The guarantee tested in ``tests/connectors/test_redaction.py``: once ``register_secret(s)``
has been called, ``redact_text(t)`` never returns text containing ``s``, whatever surrounds it.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Set
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"

# Keys whose values are secrets in any vendor's wire format (RELIABILITY.md §4.1).
SECRET_KEYS = (
    "password", "passwd", "pwd", "app_secret", "appsecret", "appsec", "app_sec", "secret", "client_secret",
    "token", "access_token", "refresh_token", "api_key", "apikey", "authorization", "proxy-authorization",
    "cookie", "set-cookie", "b1session", "routeid", "kdservice-sessionid", "asp.net_sessionid", "kdsvcsessionid",
    "sessionid", "session_id", "sign", "signature", "x-kdapi-signature", "x-api-signature", "x-kd-signature",
)
# Any key containing one of these (after lower-casing) is a secret too: UserPassword, accessToken,
# X-Api-Signature, client_secret... Over-masking a harmless "token_type" is the cheap side of the trade.
SECRET_KEY_PARTS = ("password", "passwd", "secret", "token", "signature", "sessionid", "session_id", "apikey",
                    "api_key", "api-key")
_SECRET_KEY_SET = frozenset(SECRET_KEYS)

_KEY_ALT = "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))
_PART_ALT = "|".join(re.escape(k) for k in SECRET_KEY_PARTS)
# A secret key: a word containing a secret part, or one of the exact keys. The lookahead finds the
# part, then the word is taken whole without backtracking, so long words stay linear.
_KEY = rf"(?:(?=[\w.-]*?(?:{_PART_ALT}))[\w.-]++|{_KEY_ALT})"

# "key": "value" (JSON), 'key': 'value' (Python repr of a dict), "key": 123 (JSON scalar)
_JSON_PAIR = re.compile(rf'("{_KEY}"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
_REPR_PAIR = re.compile(rf"('{_KEY}'\s*:\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", re.IGNORECASE)
_JSON_SCALAR = re.compile(rf'(["\']{_KEY}["\']\s*:\s*)(?:-?\d[\d.eE+-]*|true|false)\b', re.IGNORECASE)
# key=value (query strings, form bodies, cookies), key: value (headers)
_KV_PAIR = re.compile(rf'(?<![\w.-])({_KEY}\s*[=:]\s*)(?!\*\*\*)([^\s&;,"\']+)', re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# user:password@ in a URL
_USERINFO = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")

_MIN_LEN = 4  # masking tiny strings would garble ordinary text

_lock = threading.Lock()
_values: dict[str, frozenset[str]] = {}  # registered value -> the forms it is masked in
_values_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> frozenset[str]:
    """The value as it may appear on the wire: plain, URL-encoded, JSON-escaped."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value, safe="/"),
             json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return frozenset(f for f in forms if len(f) >= _MIN_LEN)


def _rebuild() -> None:
    global _values_pattern
    forms = {f for fs in _values.values() for f in fs}
    ordered = sorted(forms, key=len, reverse=True)
    _values_pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it shows up later.

    Values shorter than four characters (ignoring surrounding blanks) are ignored: masking them
    would garble ordinary text.
    """
    if not value or not isinstance(value, str) or len(value.strip()) < _MIN_LEN:
        return
    with _lock:
        if value in _values:
            return
        _values[value] = _forms(value)
        _rebuild()


def unregister_secret(value: str | None) -> None:
    """Forget a registered value (a session token after logout; test isolation)."""
    if not value:
        return
    with _lock:
        if _values.pop(value, None) is not None:
            _rebuild()


def registered() -> dict[str, frozenset[str]]:
    """A copy of what is registered, for :func:`restore` (test isolation)."""
    with _lock:
        return dict(_values)


def restore(saved: Mapping[str, frozenset[str]]) -> None:
    """Put back what :func:`registered` returned, forgetting values registered since."""
    with _lock:
        _values.clear()
        _values.update(saved)
        _rebuild()


def _mask_values(text: str) -> str:
    pattern = _values_pattern
    if pattern is None:
        return text
    # Repeat until none is left: a secret containing the mask ("a***") can re-form after one
    # pass. Each pass shortens the text (secrets are longer than MASK), so this terminates.
    while True:
        masked = pattern.sub(MASK, text)
        if masked == text:
            return text
        text = masked


# (pattern, group whose end starts the secret value, what replaces the value)
_VALUE_PATTERNS: tuple[tuple[re.Pattern[str], int, str], ...] = (
    (_USERINFO, 0, f"{MASK}@"),
    (_BEARER, 1, f" {MASK}"),
    (_JSON_PAIR, 1, f'"{MASK}"'),
    (_REPR_PAIR, 1, f"'{MASK}'"),
    (_JSON_SCALAR, 1, f'"{MASK}"'),
    (_KV_PAIR, 1, MASK),
)


def _secret_spans(text: str) -> list[tuple[int, int, str]]:
    """Every stretch of ``text`` to mask, found on the original text.

    Registered values and secret-key patterns are all searched before anything is replaced, so
    one cannot hide another: a registered value that also occurs inside a key name ("secret" in
    "app_secret") no longer breaks the pattern that masks that key's value.
    """
    spans: list[tuple[int, int, str]] = []
    values = _values_pattern
    if values is not None:
        spans.extend((m.start(), m.end(), MASK) for m in values.finditer(text))
    for pattern, group, replacement in _VALUE_PATTERNS:
        for m in pattern.finditer(text):
            start = m.start() if group == 0 else m.end(group)
            if m.end() > start:
                spans.append((start, m.end(), replacement))
    return spans


def _apply(text: str, spans: list[tuple[int, int, str]]) -> str:
    if not spans:
        return text
    spans.sort(key=lambda span: (span[0], -span[1]))
    out: list[str] = []
    position = 0
    start, end, replacement = spans[0]
    for next_start, next_end, next_replacement in spans[1:]:
        if next_start < end:  # overlapping stretches are masked as one
            if next_end > end:
                end, replacement = next_end, MASK
            continue
        out.append(text[position:start])
        out.append(replacement)
        position = end
        start, end, replacement = next_start, next_end, next_replacement
    out.append(text[position:start])
    out.append(replacement)
    out.append(text[end:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Mask registered secret values and secret-looking key/value pairs in free text."""
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    text = _apply(text, _secret_spans(text))
    # The masks inserted may have re-formed a registered value ("a***" around a mask); clear those.
    return _mask_values(text)


def is_secret_key(key: str) -> bool:
    """True for a key whose value must never be shown (password, B1SESSION, X-Api-Signature...)."""
    lowered = key.lower()
    return lowered in _SECRET_KEY_SET or any(part in lowered for part in SECRET_KEY_PARTS)


def redact_data(value: Any) -> Any:
    """A copy of a JSON-like structure with secret keys masked and secret values scrubbed."""
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) else redact_data(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple, Set)):
        return [redact_data(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        return redact_text(bytes(value).decode("utf-8", errors="replace"))
    return value
