"""Fixtures shared by the CLI tests."""
from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from connectors import registry
from connectors.logging import uninstall_redaction
from tests.reference.connector import ReferenceConnector


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    # the CLI configures logging for the process; leave it as we found it
    uninstall_redaction()
    logging.getLogger().handlers.clear()


@pytest.fixture
def reference_platform() -> Iterator[None]:
    """The test-only reference connector, registered for configurations that name it."""
    registry.register(ReferenceConnector)
    yield
    registry.unregister(ReferenceConnector.platform)
