from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from connectors.redaction import register_secret, unregister_secret


@pytest.fixture
def secret() -> Iterator[Callable[[str], str]]:
    """Register secrets for one test and forget them afterwards, so tests do not mask each other's text."""
    registered: list[str] = []

    def make(prefix: str = "s3cr3t") -> str:
        value = f"{prefix}-{uuid.uuid4().hex[:12]}"
        register_secret(value)
        registered.append(value)
        return value

    yield make
    for value in registered:
        unregister_secret(value)
