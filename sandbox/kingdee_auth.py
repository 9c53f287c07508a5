"""K3Cloud credentials: accounts (data centres), users, third-party app authorisations, and the
checks of the official SDK's per-request signature (vendors/kingdee.md §2.3, §11) and of the
session logins (§3).

Our own implementation from the documented algorithm; it shares nothing with any client.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

# The fixed key the SDK XORs the second part of an app id with (doc §2.3).
APP_SECRET_XOR_KEY = b"0054f397c6234378b09ca7d3e5debce7"
LCIDS = (2052, 1033, 3076)

DEFAULT_ACCT_ID = "65f1a2b3c4d5e6"
DEFAULT_USER = "demo_user"
DEFAULT_PASSWORD = "demo_password"
DEFAULT_APP_ID = "123456_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
DEFAULT_APP_SECRET = "0123456789abcdef0123456789abcdef"


@dataclass
class Account:
    """One data centre: ``users`` name → password, ``apps`` app id → app secret (an app
    authorisation lets every user of the account in); ``read_only`` users may query but every
    write answers MsgCode 2 (no permission)."""

    acct_id: str
    name: str = "演示数据中心"
    number: str = "demo"
    users: dict[str, str] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)
    read_only: set[str] = field(default_factory=set)
    user_ids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Account:
        unknown = sorted(set(data) - {"acct_id", "name", "number", "users", "apps", "read_only"})
        if unknown:
            raise ValueError(f"accounts: {unknown[0]}: unknown key (known: acct_id, name, number, users, apps, read_only)")
        if not isinstance(data.get("acct_id"), str) or not data["acct_id"]:
            raise ValueError("accounts: acct_id must be a non-empty string")
        users, apps = data.get("users", {}), data.get("apps", {})
        if not isinstance(users, Mapping) or not isinstance(apps, Mapping):
            raise ValueError("accounts: users and apps must be objects (name → password, app id → secret)")
        return cls(str(data["acct_id"]), str(data.get("name", "演示数据中心")), str(data.get("number", "demo")),
                   {str(k): str(v) for k, v in users.items()}, {str(k): str(v) for k, v in apps.items()},
                   {str(u) for u in data.get("read_only", ())})  # type: ignore[union-attr]

    def user_id(self, user: str) -> int:
        return self.user_ids.setdefault(user, 100000 + len(self.user_ids) + 1)


def default_account() -> Account:
    return Account(DEFAULT_ACCT_ID, users={DEFAULT_USER: DEFAULT_PASSWORD}, apps={DEFAULT_APP_ID: DEFAULT_APP_SECRET})


def client_secret(app_id: str) -> str:
    """The gateway secret hidden in ``<clientId>_<32 chars>`` app ids; ``""`` for other shapes."""
    parts = app_id.split("_")
    if len(parts) != 2 or len(parts[1]) != 32:
        return ""
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return ""
    return base64.b64encode(bytes(b ^ APP_SECRET_XOR_KEY[i % len(APP_SECRET_XOR_KEY)] for i, b in enumerate(raw))).decode()


def kd_signature(key: str, message: str) -> str:
    """Base64 of the lower-case hex text of HMAC-SHA256 (not of the digest)."""
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    return base64.b64encode(digest.encode("ascii")).decode("ascii")


def api_sign_message(path: str, nonce: str, timestamp: str) -> str:
    return (f"POST\n{quote(path, encoding='utf-8').replace('/', '%2F')}\n\n"
            f"x-api-nonce:{nonce}\nx-api-timestamp:{timestamp}\n")


@dataclass(frozen=True)
class SignedIdentity:
    acct_id: str
    user: str
    lcid: int
    org_num: str
    app_id: str


class PassportError(Exception):
    """The signed account does not exist: the server answers non-200 ``Fail to verify thirty passport``."""


def signature_headers_present(headers: Mapping[str, str]) -> bool:
    return bool(headers.get("X-Kd-Appkey") or headers.get("X-Kd-Signature") or headers.get("X-Api-Signature"))


def verify_signature(path: str, headers: Mapping[str, str], accounts: Mapping[str, Account]) -> SignedIdentity | None:
    """Check the SDK's signing headers (read case-insensitively by werkzeug). ``None`` when they
    do not verify (wrong app id, secret, user or lcid → MsgCode 1); :class:`PassportError` when
    the signed account id is unknown. Timestamp skew and nonce reuse are not checked (doc §2.3)."""
    app_id = headers.get("X-Kd-Appkey", "")
    appdata_b64 = headers.get("X-Kd-Appdata", "")
    try:
        appdata = base64.b64decode(appdata_b64, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    parts = appdata.split(",")
    if len(parts) != 4:
        return None
    acct_id, user, lcid_text, org_num = parts
    account = accounts.get(acct_id)
    if account is None:
        raise PassportError(acct_id)
    app_secret = account.apps.get(app_id)
    if app_secret is None or user not in account.users:
        return None
    if not lcid_text.isdigit() or int(lcid_text) not in LCIDS:
        return None
    if not hmac.compare_digest(kd_signature(app_secret, app_id + appdata), headers.get("X-Kd-Signature", "")):
        return None
    nonce, timestamp = headers.get("x-api-nonce", ""), headers.get("x-api-timestamp", "")
    expected = kd_signature(client_secret(app_id), api_sign_message(path, nonce, timestamp))
    if not hmac.compare_digest(expected, headers.get("X-Api-Signature", "")):
        return None
    client_id = headers.get("X-Api-ClientID")
    if client_id is not None and "_" in app_id and client_id != app_id.split("_")[0]:
        return None
    return SignedIdentity(acct_id, user, int(lcid_text), org_num, app_id)


def login_sign(acct_id: str, user: str, app_id: str, app_secret: str, timestamp: str) -> str:
    """``LoginBySign``'s sign: hex SHA-256 of the five strings sorted and concatenated."""
    return hashlib.sha256("".join(sorted([acct_id, user, app_id, app_secret, timestamp])).encode("utf-8")).hexdigest()
