"""Fault injection for simulators: what to break, on which calls, how often.

A :class:`FaultPlan` is plain configuration (JSON-friendly, see :meth:`FaultPlan.from_dict`);
:class:`Faults` applies it at run time. The harness decides *whether* a call fails; the vendor
simulator decides how the failure looks in its own envelope:

``faults.before(info)``
    on every call, before the simulator does anything: sleeps for injected latency, then returns
    a :class:`Decision` (rate limited, session expired, forced error) or ``None``.
``faults.after_commit(info)``
    after the simulator has committed a write: ``True`` means "lose the answer" (the simulator
    raises :class:`sandbox.server.DropConnection`).

Every rule has its own ``random.Random`` seeded from the plan's ``seed``, the rule kind and its
position, so the same plan and the same sequence of calls give the same faults, and one rule's
draws never shift another's.

Rate limits keep a sliding window per rule (and per client when ``per_client``). A refused call
gets ``Retry-After`` (whole seconds or an HTTP-date, always rounded up), and the simulator refuses
every call of that rule and client until the advertised moment has passed, so a client that
honours ``Retry-After`` is never refused twice in a row and one that does not is caught.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from enum import StrEnum
from typing import Any, ClassVar, Literal

RetryAfterFormat = Literal["seconds", "http-date"]
_RETRY_AFTER_FORMATS = ("seconds", "http-date")


class DecisionKind(StrEnum):
    ERROR = "error"
    RATE_LIMITED = "rate_limited"
    SESSION_EXPIRED = "session_expired"


@dataclass(frozen=True)
class RequestInfo:
    """What the fault rules look at. ``operation`` is the simulator's own name for the call
    (e.g. ``Save``, ``InventoryGenEntries.POST``, ``data/create``); ``session`` the session token
    the call carries, if any; ``client`` the partition for per-client rate limits (API key,
    tenant, user)."""

    method: str
    path: str
    operation: str | None = None
    session: str | None = None
    client: str | None = None


@dataclass(frozen=True)
class Decision:
    """A call the harness wants refused. ``body`` is the plan's configured body, or ``None``
    for "answer in the vendor's usual envelope"; ``headers`` holds ``Retry-After`` when there
    is one; ``retry_after`` is the same delay in seconds from the call's arrival."""

    kind: DecisionKind
    status: int
    rule: str
    body: Any = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


# --- plan -------------------------------------------------------------------------------------


def _check_number(name: str, value: object, *, low: float = 0.0, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name}: must be {bound}, got {value!r}")


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    _check_number(name, value, low=low, high=high)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Target:
    """Which calls a rule applies to (shell-style globs, case-sensitive; ``None`` = any) and
    how many times it may fire in all (``None`` = no limit)."""

    path: str | None = None
    operation: str | None = None
    method: str | None = None
    max_count: int | None = None

    def __post_init__(self) -> None:
        for name in ("path", "operation", "method"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}: must be a string, got {value!r}")
        if self.max_count is not None:
            _check_int("max_count", self.max_count, low=0)

    def matches(self, info: RequestInfo) -> bool:
        if self.method is not None and self.method.upper() != info.method.upper():
            return False
        if self.path is not None and not fnmatch.fnmatchcase(info.path, self.path):
            return False
        if self.operation is not None and (
            info.operation is None or not fnmatch.fnmatchcase(info.operation, self.operation)
        ):
            return False
        return True


@dataclass(frozen=True, kw_only=True)
class Latency(Target):
    """Delay matching calls by ``fixed`` ± ``jitter`` seconds (uniform, never below zero)."""

    fixed: float = 0.0
    jitter: float = 0.0
    rate: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number("fixed", self.fixed)
        _check_number("jitter", self.jitter)
        _check_number("rate", self.rate, high=1.0)


@dataclass(frozen=True, kw_only=True)
class RateLimit(Target):
    """At most ``limit`` accepted calls per ``period`` seconds; then ``status`` + Retry-After."""

    limit: int
    period: float = 1.0
    per_client: bool = False
    status: int = 429
    body: Any = None
    retry_after_format: RetryAfterFormat = "seconds"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("limit", self.limit, low=1)
        _check_number("period", self.period)
        if self.period <= 0:
            raise ValueError(f"period: must be above 0, got {self.period!r}")
        if not isinstance(self.per_client, bool):
            raise ValueError(f"per_client: must be true or false, got {self.per_client!r}")
        _check_int("status", self.status, low=100, high=599)
        _check_choice("retry_after_format", self.retry_after_format, _RETRY_AFTER_FORMATS)


@dataclass(frozen=True, kw_only=True)
class SessionExpiry(Target):
    """Every ``every``-th matching call that carries a session finds it expired."""

    every: int
    status: int = 401
    body: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("every", self.every, low=1)
        _check_int("status", self.status, low=100, high=599)


@dataclass(frozen=True, kw_only=True)
class ErrorFault(Target):
    """Refuse a ``rate`` share of matching calls with ``status`` (and ``body``, if given)."""

    rate: float = 1.0
    status: int = 503
    body: Any = None
    retry_after: int | None = None
    retry_after_format: RetryAfterFormat = "seconds"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number("rate", self.rate, high=1.0)
        _check_int("status", self.status, low=100, high=599)
        if self.retry_after is not None:
            _check_int("retry_after", self.retry_after, low=0)
        _check_choice("retry_after_format", self.retry_after_format, _RETRY_AFTER_FORMATS)


@dataclass(frozen=True, kw_only=True)
class DropAfterCommit(Target):
    """Lose the answer to a ``rate`` share of matching calls, after their write is committed."""

    rate: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number("rate", self.rate, high=1.0)


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """Everything to inject. Within each list the first rule that fires wins; kinds are applied
    in the order latency, rate limits, session expiry, errors (and drops after the commit)."""

    seed: int = 0
    latency: tuple[Latency, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    session_expiry: tuple[SessionExpiry, ...] = ()
    errors: tuple[ErrorFault, ...] = ()
    drop_after_commit: tuple[DropAfterCommit, ...] = ()

    RULES: ClassVar[dict[str, type[Target]]] = {
        "latency": Latency,
        "rate_limits": RateLimit,
        "session_expiry": SessionExpiry,
        "errors": ErrorFault,
        "drop_after_commit": DropAfterCommit,
    }

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: must be an integer, got {self.seed!r}")
        for name, rule_type in self.RULES.items():
            rules = tuple(getattr(self, name))
            for index, rule in enumerate(rules):
                if not isinstance(rule, rule_type):
                    raise ValueError(f"{name}[{index}]: must be a {rule_type.__name__}, got {rule!r}")
            object.__setattr__(self, name, rules)

    @classmethod
    def from_dict(cls, data: object) -> FaultPlan:
        """Build a plan from JSON data; errors name the key path, e.g. ``errors[0].rate: ...``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"fault plan: must be an object, got {data!r}")
        _reject_unknown("", data, {"seed", *cls.RULES})
        rules: dict[str, tuple[Target, ...]] = {}
        for name, rule_type in cls.RULES.items():
            items = data.get(name, [])
            if not isinstance(items, list):
                raise ValueError(f"{name}: must be a list, got {items!r}")
            rules[name] = tuple(_build_rule(rule_type, item, f"{name}[{index}]") for index, item in enumerate(items))
        return cls(seed=data.get("seed", 0), **rules)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return data | {name: list(data[name]) for name in self.RULES}

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in self.RULES)


def _reject_unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where + '.' if where else ''}{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")


def _build_rule(rule_type: type[Target], data: object, where: str) -> Target:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: must be an object, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(rule_type)}
    _reject_unknown(where, data, set(fields))
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}.{name}: required")
    try:
        return rule_type(**data)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


# --- run time ---------------------------------------------------------------------------------


class _RuleState:
    def __init__(self, rule: Any, label: str, seed: int) -> None:
        self.rule = rule
        self.label = label
        self.rng = random.Random(f"{seed}/{label}")
        self.fired = 0
        self.seen = 0  # session expiry: matching calls with a session
        self.windows: dict[str | None, deque[float]] = {}  # rate limits: accepted call times
        self.blocked_until: dict[str | None, float] = {}  # rate limits: advertised Retry-After

    def active(self, info: RequestInfo) -> bool:
        limit = self.rule.max_count
        return (limit is None or self.fired < limit) and self.rule.matches(info)

    def fires(self, info: RequestInfo) -> bool:
        """For rules with a ``rate``: one draw per matching call while the rule is active."""
        if not self.active(info) or self.rng.random() >= self.rule.rate:
            return False
        self.fired += 1
        return True


def _retry_after(now: float, wait: float, fmt: str) -> tuple[float, str]:
    """Round ``wait`` up to what the header can say; return (seconds from ``now``, header)."""
    if fmt == "http-date":
        at = math.ceil(now + wait)
        return at - now, formatdate(at, usegmt=True)
    seconds = math.ceil(wait)
    return float(seconds), str(seconds)


class Faults:
    """The fault plan in force for one simulator, with its counters and random streams."""

    def __init__(
        self, plan: FaultPlan | None = None, *,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.set(plan)

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set(self, plan: FaultPlan | Mapping[str, Any] | None) -> FaultPlan:
        """Replace the plan; counters, windows and random streams start afresh."""
        if plan is None:
            plan = FaultPlan()
        elif not isinstance(plan, FaultPlan):
            plan = FaultPlan.from_dict(plan)
        states = {
            name: [_RuleState(rule, f"{name}[{i}]", plan.seed) for i, rule in enumerate(getattr(plan, name))]
            for name in FaultPlan.RULES
        }
        with self._lock:
            self._plan = plan
            self._states = states
        return plan

    def clear(self) -> None:
        self.set(None)

    def fired(self) -> dict[str, int]:
        """How many times each rule has fired, by label (``errors[0]``, ``rate_limits[1]``...)."""
        with self._lock:
            return {s.label: s.fired for states in self._states.values() for s in states}

    def before(self, info: RequestInfo, *, now: float | None = None) -> Decision | None:
        """Apply latency, then say whether this call is refused. ``now``: the call's arrival."""
        if now is None:
            now = self.clock()
        with self._lock:
            delay = 0.0
            for state in self._states["latency"]:
                if state.fires(info):
                    rule = state.rule
                    delay += max(0.0, rule.fixed + state.rng.uniform(-rule.jitter, rule.jitter))
            decision = self._rate_limited(info, now) or self._session_expired(info) or self._error(info, now)
        if delay > 0:
            self._sleep(delay)
        return decision

    def after_commit(self, info: RequestInfo) -> bool:
        """``True``: the write is committed, now lose its answer."""
        with self._lock:
            return any(state.fires(info) for state in self._states["drop_after_commit"])

    def _rate_limited(self, info: RequestInfo, now: float) -> Decision | None:
        windows = []
        for state in self._states["rate_limits"]:
            if not state.active(info):
                continue
            rule: RateLimit = state.rule
            partition = info.client if rule.per_client else None
            window = state.windows.setdefault(partition, deque())
            while window and window[0] <= now - rule.period:
                window.popleft()
            blocked_until = state.blocked_until.get(partition, 0.0)
            if now < blocked_until:
                wait = blocked_until - now
            elif len(window) >= rule.limit:
                wait = window[0] + rule.period - now
            else:
                windows.append(window)
                continue
            state.fired += 1
            retry_after, header = _retry_after(now, wait, rule.retry_after_format)
            state.blocked_until[partition] = now + retry_after
            return Decision(DecisionKind.RATE_LIMITED, rule.status, state.label, rule.body, retry_after,
                            {"Retry-After": header})
        for window in windows:  # accepted by every limit: count it in each
            window.append(now)
        return None

    def _session_expired(self, info: RequestInfo) -> Decision | None:
        if info.session is None:
            return None
        for state in self._states["session_expiry"]:
            if not state.active(info):
                continue
            state.seen += 1
            if state.seen % state.rule.every == 0:
                state.fired += 1
                return Decision(DecisionKind.SESSION_EXPIRED, state.rule.status, state.label, state.rule.body)
        return None

    def _error(self, info: RequestInfo, now: float) -> Decision | None:
        for state in self._states["errors"]:
            if not state.fires(info):
                continue
            rule: ErrorFault = state.rule
            if rule.retry_after is None:
                return Decision(DecisionKind.ERROR, rule.status, state.label, rule.body)
            retry_after, header = _retry_after(now, rule.retry_after, rule.retry_after_format)
            return Decision(DecisionKind.ERROR, rule.status, state.label, rule.body, retry_after,
                            {"Retry-After": header})
        return None
