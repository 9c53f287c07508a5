"""check(): authenticate and make one cheap read; bad credentials are an AuthError, never retried."""
from __future__ import annotations

import pytest

from connectors.base import Entity
from connectors.errors import Action, AuthError
from tests.conformance.kit import extra


def test_check_succeeds(connector) -> None:
    result = connector.check()
    assert result.ok, result.detail


def test_bad_credentials_are_an_auth_error_never_retried(target, sim, connect) -> None:
    # Given a connection whose credentials the vendor refuses
    bad = connect(good_credentials=False)
    # When it checks, and when it reads
    with pytest.raises(AuthError) as checked:
        bad.check()
    with pytest.raises(AuthError):
        list(bad.read(Entity.ITEMS))
    # Then the error pauses the connection rather than retrying
    assert checked.value.action is Action.PAUSE and not checked.value.retryable
    # and the connector did not retry the refused login on its own (at most one login per call)
    login = extra(target, "login_operation")
    if login is not None:
        assert len(sim.calls.list(operation=login)) <= 2
    assert len(sim.calls) <= 6, [(c.method, c.path, c.status) for c in sim.calls.list()]
