"""The calls a simulator has answered (or dropped), for tests to count and time."""
from __future__ import annotations

import fnmatch
import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    """One call. ``status`` is ``None`` when the answer was dropped; ``fault`` names what the
    harness injected (``error``, ``rate_limited``, ``session_expired``, ``dropped``) or is
    ``None`` for a call the simulator handled normally. ``retry_after`` is in seconds from
    ``started`` (the arrival time the fault rules used)."""

    seq: int
    method: str
    path: str
    operation: str | None
    status: int | None
    started: float
    finished: float
    fault: str | None = None
    retry_after: float | None = None
    client: str | None = None

    @property
    def accepted(self) -> bool:
        """Not refused by an injected fault (a dropped answer was still accepted and committed)."""
        return self.fault in (None, "dropped")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CallLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def record(self, **fields: Any) -> Call:
        with self._lock:
            call = Call(seq=len(self._calls) + 1, **fields)
            self._calls.append(call)
            return call

    def list(
        self, *, method: str | None = None, path: str | None = None, operation: str | None = None,
        status: int | None = None,
    ) -> list[Call]:
        """Calls in arrival order of recording; ``path`` and ``operation`` are globs."""
        with self._lock:
            calls = list(self._calls)
        return [
            c for c in calls
            if (method is None or c.method == method.upper())
            and (path is None or fnmatch.fnmatchcase(c.path, path))
            and (operation is None or (c.operation is not None and fnmatch.fnmatchcase(c.operation, operation)))
            and (status is None or c.status == status)
        ]

    def count(self, **filters: Any) -> int:
        return len(self.list(**filters))

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)
