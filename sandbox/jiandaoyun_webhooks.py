"""Jiandaoyun data push (数据推送) as the simulator sends it (``vendors/jiandaoyun.md`` §8).

Per form: a URL, an optional secret and the ops to push. An event is POSTed to
``<url>?timestamp=<unix s>&nonce=<hex>`` with the compact UTF-8 JSON body
``{"op", "opTime", "data"}``, ``Content-Type: application/json``, a unique ``X-JDY-DeliverId``
(kept on retries [inf]) and ``X-JDY-Signature = sha1hex(f"{nonce}:{body}:{secret}:{timestamp}")``
over the exact bytes sent (the official ``webhook-demo`` algorithm).

Delivery runs on one background thread. A non-2xx answer, a refused connection or a timeout is
retried up to ``retries`` more times (4 by default, 5 attempts in all) after ``backoff[i]``
seconds (real time). Every attempt is logged with its HTTP status (``None`` when none came).

Fault knobs per form: ``duplicate`` (each event is delivered twice with the same DeliverId),
``bad_signature`` (the signature is computed with a wrong secret) and ``stale_seconds`` (the
``timestamp`` parameter is that many seconds old, e.g. 3600). ``timestamp`` and ``opTime`` come
from the simulator's clock.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

OPS = ("data_create", "data_update", "data_remove", "data_recover", "data_test", "form_update")


def signature(nonce: str, body: str, secret: str, timestamp: str) -> str:
    """``X-JDY-Signature``: hex SHA-1 of ``nonce:body:secret:timestamp`` in UTF-8."""
    return hashlib.sha1(f"{nonce}:{body}:{secret}:{timestamp}".encode()).hexdigest()


@dataclass
class HookConfig:
    url: str
    secret: str = ""
    ops: frozenset[str] = frozenset(OPS)
    duplicate: bool = False
    bad_signature: bool = False
    stale_seconds: float = 0.0

    def public(self) -> dict[str, Any]:
        return {"url": self.url, "has_secret": bool(self.secret), "ops": sorted(self.ops), "duplicate": self.duplicate,
                "bad_signature": self.bad_signature, "stale_seconds": self.stale_seconds}


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    deliver_id: str = field(compare=False)
    entry_id: str = field(compare=False)
    op: str = field(compare=False)
    data_id: str | None = field(compare=False)
    body: str = field(compare=False)
    hook: HookConfig = field(compare=False)
    attempt: int = field(compare=False, default=1)


class WebhookSender:
    """Queue, sign, send and retry pushes; ``deliveries()`` is the log of attempts."""

    def __init__(self, clock: Callable[[], float], dumps: Callable[[Any], str], *, retries: int = 4,
                 backoff: Iterable[float] = (2.0, 4.0, 8.0, 16.0), timeout: float = 5.0) -> None:
        self.clock = clock
        self._dumps = dumps
        self._defaults = (retries, tuple(backoff), timeout)
        self.retries, self.backoff, self.timeout = self._defaults
        self.hooks: dict[str, HookConfig] = {}
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._seq = itertools.count(1)
        self._busy = 0
        self._log: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self._session.trust_env = False

    # -- configuration --

    def configure(self, entry_id: str, data: Mapping[str, Any]) -> None:
        """``{"url", "secret", "ops", "duplicate", "bad_signature", "stale_seconds"}``; url null removes."""
        known = {"url", "secret", "ops", "duplicate", "bad_signature", "stale_seconds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"webhook.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        with self._cond:
            current = self.hooks.get(entry_id)
            if "url" in data and data["url"] is None:
                self.hooks.pop(entry_id, None)
                return
            url = data.get("url", current.url if current else None)
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook.url: an http(s) URL is needed, got {url!r}")
            hook = HookConfig(url=url) if current is None else HookConfig(**vars(current))
            hook.url = url
            if "secret" in data:
                if data["secret"] is not None and not isinstance(data["secret"], str):
                    raise ValueError("webhook.secret: must be text or null")
                hook.secret = data["secret"] or ""
            if "ops" in data:
                ops = data["ops"]
                if ops is None:
                    ops = OPS
                if isinstance(ops, str) or not all(op in OPS for op in ops):
                    raise ValueError(f"webhook.ops: a list of {', '.join(OPS)}")
                hook.ops = frozenset(ops)
            for flag in ("duplicate", "bad_signature"):
                if flag in data:
                    if not isinstance(data[flag], bool):
                        raise ValueError(f"webhook.{flag}: must be true or false")
                    setattr(hook, flag, data[flag])
            if "stale_seconds" in data:
                stale = data["stale_seconds"]
                if isinstance(stale, bool) or not isinstance(stale, (int, float)) or stale < 0:
                    raise ValueError("webhook.stale_seconds: a number of seconds, 0 for fresh timestamps")
                hook.stale_seconds = float(stale)
            self.hooks[entry_id] = hook

    def set_delivery(self, data: Mapping[str, Any]) -> None:
        """``{"retries": 4, "backoff": [2, 4, 8, 16], "timeout": 5}`` (seconds)."""
        unknown = sorted(set(data) - {"retries", "backoff", "timeout"})
        if unknown:
            raise ValueError(f"webhook_delivery.{unknown[0]}: unknown setting (known: backoff, retries, timeout)")
        with self._cond:
            if "retries" in data:
                if isinstance(data["retries"], bool) or not isinstance(data["retries"], int) or data["retries"] < 0:
                    raise ValueError("webhook_delivery.retries: a non-negative integer")
                self.retries = data["retries"]
            if "backoff" in data:
                backoff = data["backoff"]
                if not isinstance(backoff, list) or not backoff or not all(
                        isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in backoff):
                    raise ValueError("webhook_delivery.backoff: a non-empty list of seconds")
                self.backoff = tuple(float(b) for b in backoff)
            if "timeout" in data:
                timeout = data["timeout"]
                if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                    raise ValueError("webhook_delivery.timeout: a positive number of seconds")
                self.timeout = float(timeout)

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {"forms": {entry: hook.public() for entry, hook in self.hooks.items()},
                    "retries": self.retries, "backoff": list(self.backoff), "timeout": self.timeout,
                    "pending": len(self._queue) + self._busy}

    # -- events --

    def emit(self, entry_id: str, op: str, data: Any) -> str | None:
        """Queue one event for the form's hook; returns its DeliverId (None: no hook for this op)."""
        with self._cond:
            hook = self.hooks.get(entry_id)
            if hook is None or op not in hook.ops:
                return None
            op_time = round(self.clock() * 1000)
            event: dict[str, Any] = {"op": op, "opTime": op_time}
            if data is not None:
                event["data"] = data
            body = self._dumps(event)
            deliver_id = secrets.token_hex(16)
            data_id = data.get("_id") if isinstance(data, Mapping) else None
            copies = 2 if hook.duplicate else 1
            for _ in range(copies):
                heapq.heappush(self._queue, _Job(time.monotonic(), next(self._seq), deliver_id, entry_id, op,
                                                 data_id, body, HookConfig(**vars(hook))))
            self._start()
            self._cond.notify_all()
            return deliver_id

    def deliveries(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(entry) for entry in self._log]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued, retrying or in flight; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def reset(self) -> None:
        with self._cond:
            self.hooks.clear()
            self._queue.clear()
            self._log.clear()
            self.retries, self.backoff, self.timeout = self._defaults
            self._cond.notify_all()

    # -- the delivery thread --

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="jdy-webhooks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue or self._queue[0].due > time.monotonic():
                    wait = None if not self._queue else self._queue[0].due - time.monotonic()
                    if wait is None:
                        if not self._cond.wait(30.0) and not self._queue:
                            self._thread = None
                            return
                    else:
                        self._cond.wait(max(wait, 0.0))
                job = heapq.heappop(self._queue)
                self._busy += 1
            try:
                status, _error = self._send(job)
            finally:
                with self._cond:
                    self._busy -= 1
            with self._cond:
                if (status is None or not 200 <= status < 300) and job.attempt <= self.retries:
                    delay = self.backoff[min(job.attempt - 1, len(self.backoff) - 1)]
                    job.attempt += 1
                    job.due = time.monotonic() + delay
                    job.seq = next(self._seq)
                    heapq.heappush(self._queue, job)
                self._cond.notify_all()

    def _send(self, job: _Job) -> tuple[int | None, str | None]:
        hook = job.hook
        timestamp = str(int(self.clock() - hook.stale_seconds))
        nonce = secrets.token_hex(3)
        secret = hook.secret if not hook.bad_signature else hook.secret + "-not-the-secret"
        headers = {"Content-Type": "application/json", "X-JDY-DeliverId": job.deliver_id,
                   "X-JDY-Signature": signature(nonce, job.body, secret, timestamp)}
        status: int | None = None
        error: str | None = None
        try:
            answer = self._session.post(hook.url, params={"timestamp": timestamp, "nonce": nonce},
                                        data=job.body.encode("utf-8"), headers=headers, timeout=self.timeout,
                                        allow_redirects=False)
            status = answer.status_code
        except requests.RequestException as exc:
            error = type(exc).__name__
        with self._cond:
            self._log.append({"deliver_id": job.deliver_id, "op": job.op, "entry_id": job.entry_id,
                              "data_id": job.data_id, "attempt": job.attempt, "status": status, "error": error,
                              "timestamp": timestamp, "nonce": nonce, "url": hook.url,
                              "signature_ok": not hook.bad_signature, "at": time.time()})
        return status, error
