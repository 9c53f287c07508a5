from __future__ import annotations

import pytest

from tests import services


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
