"""The one place retry policy lives (RELIABILITY.md §2, DESIGN.md §5).

Two layers, one :class:`RetryPolicy`:

* **In-process** (:meth:`RetryPolicy.call`): a few quick attempts of one call inside the worker,
  for ``Transient`` and ``RateLimited`` only (``error.action is RETRY``). Built on tenacity with
  the settings RELIABILITY §2 asks for: ``wait_random_exponential`` (AWS "full jitter") with the
  vendor's ``Retry-After`` as a floor, ``stop_after_attempt | stop_before_delay``,
  ``reraise=True``, and a fresh ``Retrying`` per call (``Retrying`` is not thread-safe, tenacity
  #75/#701). A ``Retry-After`` longer than ``max_inline_wait`` is not slept on in the worker: the
  error goes straight to the durable layer.
* **Durable** (:meth:`RetryPolicy.decide`): what delivery does with an outbox row whose call
  failed for good in this process: retry at a later ``next_attempt_at`` (exponential backoff with
  "equal" jitter, uniform over the upper half, so a row never comes back at once; ``Retry-After``
  as a floor), reconcile with ``find`` first, defer for a dependency,
  pause the connection, or dead-letter. Attempts and total age are capped; a row gives up on age
  only after ``min_attempts_before_age`` attempts, so rows that waited out a long outage (or an
  operator retry of an old row) still get tried a few times.

``scale`` multiplies every wait the policy invents (never a vendor's ``Retry-After``), so tests
run the real policy in milliseconds: ``RetryPolicy(scale=0.001)``.

Every in-process retry is counted here, where it is decided: tenacity's ``before_sleep`` hook of
:meth:`RetryPolicy.call` (one per attempt after the first) and :meth:`RetryPolicy.batch_wait` (one
per row re-sent in a ``push_many`` batch) call :func:`sync.metrics.retried` with stage
``in_process``, the connection and the error kind. The connection is the ``connection=`` argument,
or else the ``name`` of the object whose bound method is called (a connector), or ``unknown``.
Durable retries (rows re-queued) are counted by :func:`sync.metrics.deliveries` from the
settled outcomes, as stage ``requeued``.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from connectors.errors import Action, ConnectorError, RateLimited
from sync import metrics

log = logging.getLogger("erphub.sync.retry")

T = TypeVar("T")

#: ``kind`` recorded for an exception that is not a connector error (a bug, or an unexpected
#: library failure). The request may have gone out, so it is reconciled like ``Ambiguous``.
INTERNAL = "internal"
#: The ``connection`` label of a retry whose connection could not be told.
UNKNOWN_CONNECTION = "unknown"


class Verdict(StrEnum):
    """What delivery does with a failed row."""

    RETRY = "retry"              # reschedule at ``Decision.at``
    RECONCILE = "reconcile"      # reschedule as ambiguous: ``find(key)`` before sending again
    DEFER = "defer"              # a dependency is missing: reschedule at ``Decision.at``
    PAUSE = "pause"              # pause the connection; the row waits (its attempt is not counted)
    DEAD_LETTER = "dead_letter"  # park the row in the error queue


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    at: datetime | None = None  # when to try again (RETRY, RECONCILE, DEFER)
    exhausted: bool = False     # DEAD_LETTER because the attempt or age budget ran out
    retry_after: float | None = None  # the vendor's Retry-After (seconds), when it gave one

    @property
    def ambiguous(self) -> bool:
        """The row must be reconciled with ``find`` before anything is sent again."""
        return self.verdict is Verdict.RECONCILE


def error_kind(error: BaseException) -> str:
    return error.kind if isinstance(error, ConnectorError) else INTERNAL


def error_action(error: BaseException) -> Action:
    # Anything we do not recognise may have happened after the request went out: reconcile.
    return error.action if isinstance(error, ConnectorError) else Action.RECONCILE


@dataclass(frozen=True)
class RetryPolicy:
    # -- in-process (one delivery) --
    inline_attempts: int = 3          # tries of one call in the worker (1 = no in-process retry)
    inline_initial: float = 0.5       # seconds; multiplier of wait_random_exponential
    inline_max_wait: float = 10.0     # seconds; cap of one in-process wait (before scale)
    inline_deadline: float = 60.0     # seconds; no attempt starts later (keep under the actor time limit)
    max_inline_wait: float = 15.0     # a Retry-After longer than this is handed to the durable layer
    # -- durable (outbox next_attempt_at) --
    max_attempts: int = 12            # delivery attempts (claims) before a row is dead-lettered
    max_age: timedelta = timedelta(days=2)
    min_attempts_before_age: int = 3  # age alone never kills a row tried fewer times than this
    initial: float = 15.0             # seconds; first durable backoff (before jitter and scale)
    max_backoff: float = 3600.0       # seconds; cap of one durable backoff (before scale)
    reconcile_delay: float = 30.0     # seconds to wait before find() after an ambiguous answer; keep
                                      # it above the vendor's processing time (≥ 2× the read timeout)
    defer_initial: float = 60.0       # seconds; first backoff while a dependency is missing
    # -- the relay (outbox → broker) --
    relay_max_backoff: float = 30.0   # seconds; cap of the wait after failed relay ticks (broker or store down)
    # -- leases --
    lease_seconds: float = 300.0      # must outlast the longest delivery, in-process retries included
    # -- knobs for tests --
    scale: float = 1.0                # multiplies every invented wait (never a vendor's Retry-After)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.inline_attempts < 1 or self.max_attempts < 1:
            raise ValueError("inline_attempts and max_attempts must be at least 1")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    # -- the relay -----------------------------------------------------------------------------

    def relay_backoff(self, failures: int, tick: float) -> float:
        """Seconds before the next relay tick after ``failures`` failed ones in a row: full
        jitter over ``tick · 2^failures``, capped, and never shorter than one tick, so a broker
        that is down is asked less and less often and the store is not searched for nothing.
        Outbox rows wait meanwhile; nothing is lost (F12)."""
        ceiling = min(self.relay_max_backoff * self.scale, tick * 2 ** min(failures, 30))
        return max(tick, self.rng.uniform(0.0, ceiling))

    # -- in-process ----------------------------------------------------------------------------

    def retries_inline(self, error: BaseException) -> bool:
        """True for a failure the worker may simply try again after a short wait."""
        if not isinstance(error, ConnectorError) or error.action is not Action.RETRY:
            return False
        if isinstance(error, RateLimited) and (error.retry_after or 0.0) > self.max_inline_wait:
            return False  # too long to hold a worker thread: the outbox waits instead
        return True

    def inline_wait(self, state: RetryCallState) -> float:
        """Full-jitter backoff, never shorter than the vendor's ``Retry-After``."""
        backoff = wait_random_exponential(multiplier=self.inline_initial * self.scale,
                                          max=self.inline_max_wait * self.scale)(state)
        error = state.outcome.exception() if state.outcome is not None else None
        floor = _retry_after(error)
        return max(backoff, floor) if floor is not None else backoff

    def call(self, fn: Callable[..., T], *args: Any, what: str = "call", connection: str | None = None,
             **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with in-process retries; the last error is re-raised as is.
        ``connection`` labels the retries counted (default: see the module doc)."""
        label = connection or _connection_of(fn)

        def before_sleep(state: RetryCallState) -> None:
            kind = error_kind(state.outcome.exception()) if state.outcome else INTERNAL
            metrics.retried(label, kind, metrics.IN_PROCESS)
            log.info("%s: %s on attempt %d; retrying in %.3f s", what, kind, state.attempt_number,
                     state.upcoming_sleep)

        retrying = Retrying(  # fresh per call: Retrying keeps per-run state and is not thread-safe
            stop=stop_after_attempt(self.inline_attempts) | stop_before_delay(self.inline_deadline),
            wait=self.inline_wait,
            retry=retry_if_exception(self.retries_inline),
            reraise=True,
            sleep=self.sleep,
            before_sleep=before_sleep,
        )
        return retrying(fn, *args, **kwargs)

    def batch_wait(self, attempt: int, errors: Sequence[BaseException], *, connection: str | None = None) -> float:
        """In-process wait before re-sending the retryable part of a ``push_many`` batch after its
        ``attempt``-th try: full jitter, floored by the longest ``Retry-After`` among ``errors``.
        Each of ``errors`` is one row about to be re-sent: counted as an in-process retry."""
        for error in errors:
            metrics.retried(connection or UNKNOWN_CONNECTION, error_kind(error), metrics.IN_PROCESS)
        ceiling = min(self.inline_max_wait, self.inline_initial * 2 ** min(attempt, 32)) * self.scale
        wait = self.rng.uniform(0, ceiling)
        floors = [f for f in (_retry_after(e) for e in errors) if f is not None]
        return max([wait, *floors])

    # -- durable -------------------------------------------------------------------------------

    def backoff(self, attempts: int, *, initial: float | None = None) -> float:
        """Seconds until the next durable attempt after ``attempts`` tries: uniform over
        [c/2, c] with c = ``initial·2^(attempts-1)`` capped at ``max_backoff``, then scaled."""
        base = self.initial if initial is None else initial
        ceiling = min(self.max_backoff, base * 2 ** min(max(attempts - 1, 0), 32))
        return self.rng.uniform(ceiling / 2, ceiling) * self.scale

    def exhausted(self, attempts: int, first_attempt_at: datetime, now: datetime) -> str | None:
        """Why the row has used up its budget, or None."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts (max {self.max_attempts})"
        age = now - first_attempt_at
        if age >= self.max_age and attempts >= self.min_attempts_before_age:
            return f"gave up after {attempts} attempts over {_duration(age)} (max age {_duration(self.max_age)})"
        return None

    def decide(self, error: BaseException, attempts: int, first_attempt_at: datetime, now: datetime) -> Decision:
        """What to do with a row whose delivery failed with ``error`` on its ``attempts``-th try."""
        _aware(first_attempt_at, "first_attempt_at")
        _aware(now, "now")
        action = error_action(error)
        kind = error_kind(error)
        if action is Action.PAUSE:
            return Decision(Verdict.PAUSE, f"{kind}: the connection needs an operator")
        if action is Action.DEAD_LETTER:
            return Decision(Verdict.DEAD_LETTER, f"{kind}: retrying will not help")
        spent = self.exhausted(attempts, first_attempt_at, now)
        if spent is not None:
            return Decision(Verdict.DEAD_LETTER, f"{kind}: {spent}", exhausted=True)
        if action is Action.DEFER:
            wait = self.backoff(attempts, initial=self.defer_initial)
            return Decision(Verdict.DEFER, f"{kind}: waiting for a dependency", at=now + timedelta(seconds=wait))
        if action is Action.RECONCILE:
            wait = max(self.reconcile_delay * self.scale, self.backoff(attempts))
            return Decision(Verdict.RECONCILE, f"{kind}: outcome unknown; find() before sending again",
                            at=now + timedelta(seconds=wait))
        wait = self.backoff(attempts)
        floor = _retry_after(error)
        if floor is not None:
            wait = max(wait, floor)
        return Decision(Verdict.RETRY, f"{kind}: retry in {wait:.3g} s", at=now + timedelta(seconds=wait),
                        retry_after=floor)


def _connection_of(fn: Callable[..., Any]) -> str:
    """The ``name`` of the object ``fn`` is a bound method of (a connector: its connection name),
    following ``functools.wraps`` wrappers; ``unknown`` when there is none."""
    for _ in range(8):  # a wrapper chain is short; never loop on a cyclic __wrapped__
        name = getattr(getattr(fn, "__self__", None), "name", None)
        if isinstance(name, str) and name:
            return name
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is None:
            break
        fn = wrapped
    return UNKNOWN_CONNECTION


def _retry_after(error: BaseException | None) -> float | None:
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return max(0.0, float(error.retry_after))
    return None


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s"


__all__ = ["INTERNAL", "UNKNOWN_CONNECTION", "Decision", "RetryPolicy", "Verdict", "error_action", "error_kind"]
