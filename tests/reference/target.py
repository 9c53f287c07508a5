"""The reference ERP as a conformance target (``TARGETS``), used by the suite's conftest."""
from __future__ import annotations

from typing import Any

from connectors.base import ConnectionSettings, Connector
from tests.conformance.target import ConformanceTarget
from tests.reference.connector import ReferenceConnector, ReferenceSettings
from tests.reference.simulator import PASSWORD, USER, ReferenceErp


def simulator(**kwargs: Any) -> ReferenceErp:
    return ReferenceErp(**kwargs)


def settings(url: str, good_credentials: bool = True, **overrides: Any) -> ReferenceSettings:
    return ReferenceSettings(url=url, user=USER, password=PASSWORD if good_credentials else "not-the-password",
                             **overrides)


EXTRAS = {
    "rejected_vendor_code": "E_STOCK_NEGATIVE",
    "push_fault_target": {"method": "POST", "path": "/api/documents"},
    "read_fault_target": {"method": "GET", "path": "/api/items"},
    "login_operation": "login",
}


def target(connector: type[Connector], id: str, **kwargs: Any) -> ConformanceTarget:
    def build(s: ConnectionSettings) -> Connector:
        return connector(s, name=id)  # type: ignore[arg-type]

    return ConformanceTarget(platform="reference", id=id, simulator=simulator, settings=settings,
                             extras=EXTRAS, connector=build, **kwargs)


REFERENCE = target(ReferenceConnector, "reference")
TARGETS = [REFERENCE]
