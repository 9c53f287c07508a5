from __future__ import annotations

import io
import json
import logging
import time
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.errors import ALL_ERRORS, ConnectorError, RateLimited
from connectors.logging import RedactingFilter, install_redaction, uninstall_redaction
from connectors.redaction import MASK, is_secret_key, redact_data, redact_text, register_secret, unregister_secret

# ------------------------------------------------------------------------------------------------
# Registered values


def test_registered_value_is_masked_anywhere(secret):
    # Given a secret the configuration resolved
    value = secret()
    # When it shows up glued to other text
    text = f"login failed for acct 1 using{value}and more"
    # Then only the mask is left
    assert redact_text(text) == f"login failed for acct 1 using{MASK}and more"


def test_registered_value_is_masked_in_its_wire_encodings(secret):
    # Given a secret with characters that get escaped on the wire
    value = secret('p@ss w/rd"金蝶')
    # When it appears URL-encoded in a query string or form body, or JSON-escaped in a body
    texts = [
        "GET /api?" + urlencode({"key": value}),
        "GET /api?key=" + quote(value, safe=""),
        "form: key=" + quote_plus(value),
        json.dumps({"parameters": ["acct", "user", value]}),
        json.dumps({"parameters": ["acct", "user", value]}, ensure_ascii=False),
    ]
    # Then no encoding of it survives
    for text in texts:
        redacted = redact_text(text)
        for form in (value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]):
            assert form not in redacted, text


def test_tiny_and_blank_values_are_not_registered():
    # Masking three-letter or blank "secrets" would garble every message
    for value in ("abc", "    ", " ab ", "", None):
        register_secret(value)
    assert redact_text("abc def    ghi") == "abc def    ghi"


def test_unregistered_value_is_no_longer_masked():
    register_secret("rotated-session-token-1")
    unregister_secret("rotated-session-token-1")
    assert redact_text("rotated-session-token-1") == "rotated-session-token-1"


_SECRETS = st.text(min_size=4, max_size=40).filter(lambda s: len(s.strip()) >= 4)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=_SECRETS, before=st.text(max_size=40), after=st.text(max_size=40))
def test_a_registered_secret_never_survives(value, before, after):
    # Given any registered secret, mask characters included
    register_secret(value)
    try:
        # When it is embedded anywhere in any text
        redacted = redact_text(before + value + after)
        # Then it is gone
        assert value not in redacted
    finally:
        unregister_secret(value)


@settings(max_examples=100)
@given(value=_SECRETS, before=st.text(max_size=20))
def test_a_registered_secret_never_survives_in_json(value, before):
    register_secret(value)
    try:
        for ensure_ascii in (True, False):
            redacted = redact_text(json.dumps({"note": before, "x": [value]}, ensure_ascii=ensure_ascii))
            assert value not in redacted
            assert json.dumps(value, ensure_ascii=ensure_ascii)[1:-1] not in redacted
    finally:
        unregister_secret(value)


# ------------------------------------------------------------------------------------------------
# Secret-looking keys, never registered


@pytest.mark.parametrize(("text", "leaked"), [
    # SAP B1 Service Layer login body
    ('{"CompanyDB": "SBODEMOCN", "UserName": "manager", "Password": "hunter22"}', "hunter22"),
    # JSON numbers and escaped quotes
    ('{"pwd": 123456, "acct": 1}', "123456"),
    ('{"app_secret": "ab\\"cd\\"ef"}', 'ab\\"cd'),
    # key=value: query strings and form bodies
    ("acctid=1&password=hunter22&lcid=2052", "hunter22"),
    ("/api/v2/currentstock?from_account=A&token=9f8e7d6c5b", "9f8e7d6c5b"),
    ("appsecret=0123456789abcdef", "0123456789abcdef"),
    # headers
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("Authorization: Basic bWFuYWdlcjpodW50ZXIy", "bWFuYWdlcjpodW50ZXIy"),
    ("X-Api-Signature: 7f3a9b2c1d", "7f3a9b2c1d"),
    ("X-Kd-Signature: 7f3a9b2c1d", "7f3a9b2c1d"),
    # Bearer tokens in free text
    ("calling with Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
    # cookies
    ("Cookie: B1SESSION=0f9c2a4e-1111-2222-3333-444455556666; ROUTEID=.node1", "0f9c2a4e"),
    ("Cookie: B1SESSION=0f9c2a4e-1111; ROUTEID=.node1", ".node1"),
    ("Set-Cookie: kdservice-sessionid=8d7c6b5a-aaaa; path=/", "8d7c6b5a"),
    ("Set-Cookie: ASP.NET_SessionId=x1y2z3w4v5; path=/; HttpOnly", "x1y2z3w4v5"),
    # a Python dict repr, as in logger.debug("payload %s", payload)
    ("{'UserName': 'manager', 'Password': 'hunter22'}", "hunter22"),
    ("{'accessToken': \"tok-12345678\"}", "tok-12345678"),
    # credentials in a URL
    ("https://manager:hunter22@b1.example.test:50000/b1s/v1", "hunter22"),
    # keys containing a secret word
    ('{"UserPassword": "hunter22", "refreshToken": "r-9876"}', "hunter22"),
    ('{"SessionId": "a7b6c5d4-e3f2", "Version": "1000"}', "a7b6c5d4"),
])
def test_secret_looking_pairs_are_masked(text, leaked):
    assert leaked not in redact_text(text)
    assert MASK in redact_text(text)


@pytest.mark.parametrize("text", [
    "FBillNo='CGRK000123' and FQty=5",
    "GET b1.example.test/b1s/v1/Items?$filter=ItemCode eq 'A001'",
    '{"FormId": "STK_InStock", "Model": {"FQty": 5, "FName": "金蝶 螺丝"}}',
    "signed off by the warehouse; designation=A1",
])
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


def test_nested_structures_are_masked_by_key_and_value(secret):
    # Given a nested payload with secret keys at several depths and a registered value elsewhere
    value = secret()
    payload = {
        "Login": {"UserName": "manager", "Password": "hunter22"},
        "Headers": [{"Authorization": "Bearer abc"}, {"Cookie": "B1SESSION=xyz"}],
        "Model": {"FNote": f"sent by {value}", "FName": "金蝶", "FQty": 5, "Lines": ({"token": 1},)},
    }
    # When it is redacted
    out = redact_data(payload)
    # Then secrets are masked, everything else is kept, and the input is untouched
    assert out == {
        "Login": {"UserName": "manager", "Password": MASK},
        "Headers": [{"Authorization": MASK}, {"Cookie": MASK}],
        "Model": {"FNote": f"sent by {MASK}", "FName": "金蝶", "FQty": 5, "Lines": [{"token": MASK}]},
    }
    assert payload["Login"]["Password"] == "hunter22"


@pytest.mark.parametrize(("key", "expected"), [
    ("password", True), ("Password", True), ("UserPassword", True), ("app_secret", True), ("appsec", True),
    ("B1SESSION", True), ("ROUTEID", True), ("kdservice-sessionid", True), ("X-Api-Signature", True),
    ("access_token", True), ("Authorization", True), ("Set-Cookie", True), ("sign", True),
    ("UserName", False), ("FBillNo", False), ("design", False), ("FormId", False), ("acctid", False),
])
def test_is_secret_key(key, expected):
    assert is_secret_key(key) is expected


# ------------------------------------------------------------------------------------------------
# Logging


@pytest.fixture
def captured():
    """A logger whose only handler writes to a string and carries the redacting filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.connectors.redaction.captured")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_filter_scrubs_a_secret_passed_as_an_argument(captured, secret):
    logger, stream = captured
    value = secret()
    # When a secret arrives as a %-argument, inside a dict argument, and as a keyed pair
    logger.info("logging in with %s", value)
    logger.info("payload %s", {"UserName": "manager", "Password": "hunter22"})
    logger.info("query %s", "token=abcdef123")
    # Then the handler never sees it
    out = stream.getvalue()
    assert value not in out and "hunter22" not in out and "abcdef123" not in out
    assert "logging in with ***" in out and "manager" in out


def test_filter_scrubs_exception_text(captured, secret):
    logger, stream = captured
    value = secret()
    try:
        raise RuntimeError(f"vendor said: bad key {value}")
    except RuntimeError:
        logger.exception("push failed")
    out = stream.getvalue()
    assert "push failed" in out and "RuntimeError" in out
    assert value not in out


def test_filter_survives_bad_format_arguments(captured, secret):
    logger, stream = captured
    value = secret()
    logger.info("two placeholders %s %s", value)  # a bug in the caller must not leak or raise
    assert value not in stream.getvalue()


@pytest.fixture
def redaction_installed():
    install_redaction()
    yield
    uninstall_redaction()


def test_installed_redaction_covers_records_from_any_logger(redaction_installed, caplog, secret):
    # Given redaction installed the way the CLI does, and a record from a child logger that
    # propagates to root (a filter on the root *logger* alone would never see it)
    value = secret()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("connectors.kingdee.client").warning("relogin as %s with %s", "manager", value)
    # Then what the handlers get is redacted
    assert value not in caplog.text
    assert "relogin as manager with ***" in caplog.text


# ------------------------------------------------------------------------------------------------
# Errors


def _make(cls: type[ConnectorError], message: str) -> ConnectorError:
    return cls(message, retry_after=1.0) if issubclass(cls, RateLimited) else cls(message)


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_no_error_message_carries_a_registered_secret(cls, secret):
    value = secret()
    err = _make(cls, f"POST erp/api: vendor answered {{\"detail\": \"bad {value}\"}}")
    for text in (str(err), err.message, repr(err), *map(str, err.args)):
        assert value not in text


@settings(max_examples=100)
@given(value=_SECRETS, before=st.text(max_size=20), cls=st.sampled_from(ALL_ERRORS))
def test_no_error_message_carries_a_random_registered_secret(value, before, cls):
    register_secret(value)
    try:
        err = _make(cls, before + value)
        assert value not in str(err) and value not in repr(err)
    finally:
        unregister_secret(value)


def test_redaction_stays_linear_on_hostile_text():
    # A vendor page full of "token" must not make the regexes backtrack quadratically
    started = time.monotonic()
    for text in ("token" * 40_000, '"' + "token" * 40_000, "'" + "password" * 25_000, "a=" * 100_000):
        redact_text(text)
    assert time.monotonic() - started < 5  # ~0.05 s when linear; minutes when quadratic


def test_filter_leaves_structlog_event_dicts_to_their_own_chain():
    # structlog hands stdlib a dict as record.msg; turning it into a string would break its formatter
    event = {"event": "pushed", "key": "mv-1"}
    record = logging.LogRecord("sync", logging.INFO, __file__, 1, event, (), None)
    assert RedactingFilter().filter(record) is True
    assert record.msg is event


def test_a_registered_value_inside_a_key_name_does_not_unmask_that_keys_value():
    # Given a secret value that also occurs inside a secret key's name
    register_secret("secret")
    try:
        # When a JSON pair with that key is redacted
        text = redact_text('{"app_secret": "ab\\"cd\\"ef", "note": "a secret"}')
    finally:
        unregister_secret("secret")
    # Then the key's value is still masked as a whole
    assert "ab" not in text and "cd" not in text and "ef" not in text
    assert "secret" not in text
