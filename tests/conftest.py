from __future__ import annotations

import pytest

from connectors import redaction
from tests import services


@pytest.fixture(autouse=True)
def _isolated_secrets():
    """Secrets registered by one test (a config load, a login) must not mask another test's text."""
    saved = redaction.registered()
    yield
    redaction.restore(saved)


@pytest.fixture
def postgres_url() -> str:
    services.require("postgres")
    return services.POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    services.require("redis")
    return services.REDIS_URL


@pytest.fixture
def rabbitmq_url() -> str:
    services.require("rabbitmq")
    return services.RABBITMQ_URL
