"""Jiandaoyun (简道云) as a conformance target: the v5 connector against ``sandbox.jiandaoyun`` over
loopback, on the simulator's reference inventory app (fields named by label, resolved through
``widget/list``), with the simulator's own rate limits (30/20/10 and 50 per second) left on so
the connector's throttle is exercised too.
"""
from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from connectors.jiandaoyun import JiandaoyunSettings
from sandbox.jiandaoyun import DEFAULT_API_KEY, JiandaoyunSimulator
from tests.conformance.target import ConformanceTarget


def simulator(**kwargs: Any) -> JiandaoyunSimulator:
    return JiandaoyunSimulator(**kwargs)


def settings(url: str, good_credentials: bool = True, **overrides: Any) -> JiandaoyunSettings:
    key = DEFAULT_API_KEY if good_credentials else "jdy-not-a-key"
    return JiandaoyunSettings(url=f"{url}/api", api_key=SecretStr(key), **overrides)


EXTRAS: dict[str, Any] = {
    # the tenant's stock automation refuses a movement that would take stock negative: 4000
    "rejected_vendor_code": "4000",
    "push_fault_target": {"operation": "app/entry/data/create"},
    "read_fault_target": {"operation": "app/entry/data/list"},
}

SKIPS = {
    "test_session_expiry_mid_run_is_one_relogin":
        "Jiandaoyun authenticates every call with a static API key (Bearer); there is no session to expire "
        "and no login to repeat",
}

TARGETS = [ConformanceTarget(platform="jiandaoyun", simulator=simulator, settings=settings, extras=EXTRAS,
                             skips=SKIPS)]
