"""A small TCP fault proxy for tests (RELIABILITY.md §3: toxiproxy is not packaged here).

``FaultProxy(upstream_port)`` listens on a loopback port and forwards every connection to the
upstream (a simulator, Redis, ...). Faults are switched at run time and apply to the bytes that
flow from then on:

- :meth:`heal` — plain forwarding (the default);
- :meth:`blackhole` — half-open: connections are accepted, requests are read and never answered.
  ``match=b"POST /api/documents"`` hangs only the connections whose next request starts with
  those bytes (others pass); ``forward=True`` still delivers the request upstream and drops only
  the answer (the server commits, the client never hears of it);
- :meth:`latency` — every answer chunk is held ``mean ± jitter`` seconds (uniform);
- :meth:`close_after` — each connection is closed after ``n`` bytes of answer;
- :meth:`stop` / :meth:`start` — the port goes dead (connection refused, live connections cut)
  and comes back on the same port.

:attr:`hung` records every half-open exchange: when its request arrived and when the client gave
up (closed the connection), so a test can check that nothing waited past its timeout.
"""
from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class HungCall:
    request: bytes          # the first bytes of the request that was swallowed
    started: float          # time.monotonic() when it arrived
    ended: float | None = None  # when the client closed the connection

    @property
    def waited(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


@dataclass
class _Mode:
    kind: str = "pass"              # pass | blackhole | latency | close_after
    match: bytes | None = None
    forward: bool = False
    mean: float = 0.0
    jitter: float = 0.0
    limit: int = 0


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Link:
    client: socket.socket
    upstream: socket.socket
    hung: HungCall | None = None
    answered: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class FaultProxy:
    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1", host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.hung: list[HungCall] = []
        self.connections = 0
        self._mode = _Mode()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), name=f"faultproxy-{self.port}",
                                           daemon=True)
        self._accepting.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every live connection (the port refuses until :meth:`start`)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accepting is not None:
            self._accepting.join(2)
            self._accepting = None
        with self._lock:
            links, self._links = list(self._links), set()
        for link in links:
            link.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, scheme: str = "http", path: str = "") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    # -- faults --------------------------------------------------------------------------------

    def heal(self) -> None:
        self._set(_Mode())

    def blackhole(self, *, match: bytes | None = None, forward: bool = False) -> None:
        self._set(_Mode("blackhole", match=match, forward=forward))

    def latency(self, mean: float, jitter: float = 0.0) -> None:
        self._set(_Mode("latency", mean=mean, jitter=jitter))

    def close_after(self, n: int) -> None:
        self._set(_Mode("close_after", limit=n))

    def wait_hung_closed(self, timeout: float = 2.0) -> list[HungCall]:
        """The hung calls, once their clients have all closed (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while any(c.ended is None for c in self.hung) and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.hung)

    def _set(self, mode: _Mode) -> None:
        with self._lock:
            self._mode = mode

    def _current(self) -> _Mode:
        with self._lock:
            return self._mode

    # -- plumbing ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
                self.connections += 1
            threading.Thread(target=self._requests, args=(link,), daemon=True).start()
            threading.Thread(target=self._answers, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        """Client → upstream."""
        try:
            while True:
                data = link.client.recv(65536)
                if not data:
                    break
                mode = self._current()
                if link.hung is None and mode.kind == "blackhole" and (
                        mode.match is None or data.startswith(mode.match)):
                    link.hung = HungCall(data[:80], time.monotonic())
                    with self._lock:
                        self.hung.append(link.hung)
                if link.hung is not None and not (mode.kind == "blackhole" and mode.forward):
                    continue  # swallowed: never reaches the upstream
                link.upstream.sendall(data)
        except OSError:
            pass
        finally:
            if link.hung is not None and link.hung.ended is None:
                link.hung.ended = time.monotonic()
            self._drop(link)

    def _answers(self, link: _Link) -> None:
        """Upstream → client."""
        try:
            while True:
                data = link.upstream.recv(65536)
                if not data:
                    break
                if link.hung is not None:
                    continue  # half-open: the answer never comes
                mode = self._current()
                if mode.kind == "latency":
                    with self._lock:
                        delay = max(0.0, mode.mean + self._rng.uniform(-mode.jitter, mode.jitter))
                    time.sleep(delay)
                elif mode.kind == "close_after":
                    room = mode.limit - link.answered
                    if room <= 0:
                        break
                    data = data[:room]
                link.client.sendall(data)
                link.answered += len(data)
                if mode.kind == "close_after" and link.answered >= mode.limit:
                    break
        except OSError:
            pass
        finally:
            if link.hung is None:
                self._drop(link)

    def _drop(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
        link.close()
