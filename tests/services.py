"""Reach the external services some tests need (PostgreSQL, Redis, RabbitMQ).

Locally a missing service skips the test; in CI (``CI=true``) it fails it, so CI can never
pass by silently skipping the tests that matter.
"""
from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get("ERPHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ERPHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get("ERPHUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

_PORTS = {"postgres": 5432, "redis": 6379, "rabbitmq": 5672}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    """Skip (locally) or fail (in CI) unless ``service`` answers on its port."""
    if port_open(_PORTS[service]):
        return
    message = f"{service} is not reachable on 127.0.0.1:{_PORTS[service]}"
    if in_ci():
        pytest.fail(f"{message}; CI must not skip this test", pytrace=False)
    pytest.skip(message)
