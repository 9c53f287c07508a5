"""Serve a WSGI app on loopback for tests: threaded, HTTP/1.1 keep-alive, TCP_NODELAY.

Werkzeug's development server does the socket, threading and environ work, but its request
handler ends every response with ``Connection: close`` (and waits 10 ms draining the socket),
so it cannot keep a connection alive. :class:`_Handler` replaces only the part that runs the app
and writes its answer: the request body is read in full before the app runs (so the next request
on the connection starts where it should), and the answer leaves in one write with a
``Content-Length``.

A simulator loses an answer by raising :class:`DropConnection` (after it has committed its
write): the server then closes the connection without sending a byte, which the client sees as
``RemoteDisconnected`` / ``ConnectionResetError`` (``requests.ConnectionError``).
"""
from __future__ import annotations

import io
import logging
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.exceptions import BadRequest, InternalServerError
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

_log = logging.getLogger("sandbox.server")

_LEVELS = {"info": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR}


class DropConnection(BaseException):
    """Raised by an app to close the connection without answering.

    A ``BaseException`` on purpose: a simulator that turns every ``Exception`` into its vendor's
    error envelope must not turn this into an answer.
    """

    def __init__(self, *, reset: bool = False) -> None:
        super().__init__("drop the connection without an answer")
        self.reset = reset  # True: RST (ConnectionResetError); False: FIN (RemoteDisconnected)


class _Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffered: status line, headers and body leave in one send on flush()

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        environ = self.environ = self.make_environ()
        try:
            body = self._read_body(environ)
        except BadRequest as exc:
            self.close_connection = True
            self._send(*_collect(exc, environ))
            return
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        try:
            answer = _collect(self.server.app, environ)
        except DropConnection as drop:
            self._drop(drop.reset)
            return
        except Exception:
            _log.exception("unhandled error in %s %s", self.command, self.path)
            answer = _collect(InternalServerError(), environ)
        self._send(*answer)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        if environ.get("wsgi.input_terminated"):  # chunked: werkzeug already de-chunks the stream
            return environ["wsgi.input"].read()
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            raise BadRequest(f"invalid Content-Length {length!r}")
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            raise ConnectionError("client closed the connection inside the request body")
        return body

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code_text, _, reason = status.partition(" ")
        code = int(code_text)
        keys = {key.lower() for key, _ in headers}
        self.log_request(code, len(body))
        self.send_response_only(code, reason or None)
        if "server" not in keys:
            self.send_header("Server", self.version_string())
        if "date" not in keys:
            self.send_header("Date", self.date_time_string())
        for key, value in headers:
            self.send_header(key, value)  # "Connection: close" from the app also ends keep-alive
        bodiless = code < 200 or code in (204, 304)
        if "content-length" not in keys and not bodiless:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection and "connection" not in keys:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and not bodiless and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _log.debug("%s %s: connection dropped without an answer", self.command, self.path)

    def log(self, type: str, message: str, *args: Any) -> None:
        _log.log(_LEVELS.get(type, logging.INFO), "%s " + message.rstrip("\n"), self.address_string(), *args)


def _collect(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI app to completion and return its status, headers and whole body."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, list(headers)]
        return chunks.append

    result: Iterable[bytes] = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI app returned without calling start_response")
    return started[0], started[1], b"".join(chunks)


class _BindFailed(Exception):
    """Carries a bind error past werkzeug, which would print it and call ``sys.exit(1)``."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _Server(ThreadedWSGIServer):
    """Werkzeug's threaded server, keeping track of its connections and threads to stop cleanly."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        super().__init__(host, port, app, handler=_Handler)
        self._guard = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._conn_threads: set[threading.Thread] = set()
        self._accepted = 0

    def server_bind(self) -> None:
        try:
            super().server_bind()
        except OSError as exc:
            raise _BindFailed(exc) from exc

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # RELIABILITY §5.2(d)
        with self._guard:
            self._connections.add(conn)
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._guard:
            self._accepted += 1
            name = f"sandbox-conn-{self.port}-{self._accepted}"
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name=name, daemon=True
        )
        with self._guard:
            self._conn_threads.add(thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._guard:
                self._conn_threads.discard(threading.current_thread())

    def shutdown_request(self, request: Any) -> None:
        with self._guard:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> list[threading.Thread]:
        """Wake every connection thread (idle keep-alive ones wait in a read), join them.

        Returns the threads still alive after ``timeout`` seconds.
        """
        with self._guard:
            connections, threads = list(self._connections), list(self._conn_threads)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its own thread
        for thread in threads:
            thread.join(timeout)
        return [thread for thread in threads if thread.is_alive()]


class SimulatorServer:
    """A WSGI app served on ``host`` (loopback by default) at an ephemeral or given port.

    ``with SimulatorServer(app) as srv: requests.get(srv.url + "/path")``, or ``start()``/``stop()``.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SimulatorServer:
        if self._server is not None or self._stopped:
            raise RuntimeError("a SimulatorServer starts once")
        try:
            self._server = _Server(self.host, self._requested_port, self.app)
        except _BindFailed as failed:
            error = failed.error
            raise OSError(error.errno, f"cannot listen on {self.host}:{self._requested_port}: {error.strerror}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"sandbox-server-{self._server.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection and join every thread (idempotent)."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        self._server.shutdown()  # returns once serve_forever has left its loop
        assert self._thread is not None
        self._thread.join(timeout)
        self._server.server_close()
        stuck = self._server.close_connections(timeout)
        if stuck:
            _log.warning("%d connection thread(s) still busy after %.1f s", len(stuck), timeout)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = self.url if self._server is not None else f"{self.host}:{self._requested_port}"
        return f"<SimulatorServer {where} {state}>"
