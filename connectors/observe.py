"""Events a connector client reports to whoever listens, without knowing who that is.

``connectors/`` must not import ``sync/`` (tests/test_architecture.py), yet the engine wants to
count what happens inside a client that no exception shows: a transparent re-login after the
vendor dropped the session (Kingdee ``MsgCode 1``; SAP B1 Service Layer 401 / code 301; DI Server
fault 301). A client makes one call where it happens::

    observe.relogin(self.name, reason="MsgCode 1")

and :mod:`sync.metrics` subscribes once, at import, to turn it into
``erphub_relogins_total{connection}``. With no listener an event costs one empty loop.

A listener runs in the client's thread, inside the call being made: it must be quick, and an
exception it raises is logged and swallowed (observing never breaks the work it observes).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RELOGIN", "Event", "Listener", "emit", "relogin", "subscribe"]

log = logging.getLogger(__name__)

#: A transparent re-login after the vendor refused the session (not the first login of a client).
RELOGIN = "relogin"


@dataclass(frozen=True)
class Event:
    kind: str        # RELOGIN
    connection: str  # the client's name: the connection name when built by a connector
    reason: str = ""


Listener = Callable[[Event], None]

_lock = threading.Lock()
_listeners: tuple[Listener, ...] = ()  # replaced, never mutated: emit() reads it without the lock


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` with every event from now on; returns a function that unsubscribes it."""
    global _listeners
    with _lock:
        _listeners = (*_listeners, listener)

    def unsubscribe() -> None:
        global _listeners
        with _lock:
            _listeners = tuple(item for item in _listeners if item is not listener)

    return unsubscribe


def emit(event: Event) -> None:
    for listener in _listeners:
        try:
            listener(event)
        except Exception:
            log.exception("listener %r failed on %s", listener, event.kind)


def relogin(connection: str, *, reason: str = "") -> None:
    """The client named ``connection`` is logging in again because the vendor refused its session."""
    emit(Event(RELOGIN, connection, reason))
