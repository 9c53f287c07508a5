"""Sessions a simulator has handed out (login tokens, session cookies).

Tokens are the simulator's to shape (a GUID for SAP B1, a ``kdservice-sessionid`` for K3Cloud);
by default a random hex string. ``expire_all()`` is the "every session dies now" fault.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Session:
    token: str
    data: Any
    created: float
    last_used: float


class SessionStore:
    """Thread-safe token → :class:`Session`, with an optional idle timeout in seconds."""

    def __init__(self, *, idle_timeout: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, data: Any = None, *, token: str | None = None) -> Session:
        now = self.clock()
        session = Session(token or secrets.token_hex(16), data, now, now)
        with self._lock:
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token`` (and mark it used), or ``None`` if unknown or idle too long."""
        if token is None:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if self.idle_timeout is not None and now - session.last_used > self.idle_timeout:
                del self._sessions[token]
                return None
            session.last_used = now
            return session

    def expire(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def expire_all(self) -> None:
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
