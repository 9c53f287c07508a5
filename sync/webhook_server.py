"""The HTTP receiver of the webhook intake: a small WSGI app served by waitress.

=======================================  ======================================================
request                                  answer
=======================================  ======================================================
``POST /webhooks/<connection>``          :func:`sync.webhooks.accept`: 200 ok / duplicate, 401
                                         refused, 400 not understood, 404 unknown connection,
                                         500 not taken in (the vendor delivers again)
``GET /health``                          200 ``ok`` (the receiver is up; it does not touch the store)
anything else                            404, or 405 for another method on a webhook path
=======================================  ======================================================

The body is read raw (vendors sign the bytes they sent) and limited to ``max_body`` bytes (413
beyond it, from waitress before the app runs, or from the app for a body without a declared
length); header names are lower-cased and the query string parsed (first value of each name),
as :class:`~connectors.base.WebhookRequest` expects.

:func:`serve` runs it on a waitress server in a background thread; ``erphub webhook serve`` and
``erphub sync run --webhook-port`` use it. Loopback by default: put a TLS-terminating reverse
proxy in front of it to take webhooks from the internet.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Self

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from connectors.base import WebhookRequest
from sync.connections import Connections
from sync.flows import FlowLike
from sync.store import Store, utcnow
from sync.webhooks import accept

log = logging.getLogger("erphub.sync.webhook_server")

__all__ = ["DEFAULT_MAX_BODY", "PREFIX", "WebhookApp", "WebhookServer", "serve"]

#: Largest body accepted (bytes). A Jiandaoyun push carries one record with its subform rows.
DEFAULT_MAX_BODY = 1024 * 1024
PREFIX = "/webhooks/"
HEALTH = ("/health", "/healthz")


class WebhookApp:
    """The WSGI application (see the module doc)."""

    def __init__(self, store: Store, connections: Connections, flows: Sequence[FlowLike] = (), *,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        if max_body < 1:
            raise ValueError("max_body must be at least 1 byte")
        self.store = store
        self.connections = connections
        self.flows = list(flows)
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self.max_body
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        path = request.path
        if path in HEALTH:
            if request.method not in ("GET", "HEAD"):
                return _text(405, "method not allowed", allow="GET, HEAD")
            return _text(200, "ok")
        name = path[len(PREFIX):] if path.startswith(PREFIX) else ""
        if not name or "/" in name:
            return _text(404, "not found")
        if request.method != "POST":
            return _text(405, "method not allowed", allow="POST")
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            log.warning("[%s] webhook body over %d bytes refused", name[:100], self.max_body)
            return _text(413, "body too large")
        hook = WebhookRequest(method=request.method, path=path, query=request.args.to_dict(flat=True),
                              headers={k.lower(): v for k, v in request.headers.items()}, body=body,
                              received_at=utcnow())
        outcome = accept(self.store, self.connections, name, hook, flows=self.flows)
        return _text(outcome.status, outcome.body)


def _text(status: int, body: str, **headers: str) -> Response:
    response = Response(body, status=status, mimetype="text/plain")
    for key, value in headers.items():
        response.headers[key.replace("_", "-").title()] = value
    return response


class WebhookServer:
    """A waitress server for a :class:`WebhookApp` on one address, run from a daemon thread."""

    def __init__(self, app: WebhookApp, *, host: str = "127.0.0.1", port: int = 0, threads: int = 4) -> None:
        from waitress.server import create_server

        self.app = app
        self._server = create_server(app, host=host, port=port, threads=threads, ident="erphub",
                                     max_request_body_size=app.max_body, expose_tracebacks=False,
                                     clear_untrusted_proxy_headers=True)
        if not hasattr(self._server, "effective_port"):
            self._server.close()
            raise ValueError(f"{host!r} names several addresses; give one address, e.g. 127.0.0.1")
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        host = self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> WebhookServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.run, name="erphub-webhooks", daemon=True)
            self._thread.start()
            log.info("webhooks received on %s%s<connection>", self.url, PREFIX)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop listening, close open connections and wait for requests being handled."""
        server = self._server
        if self._thread is None:
            server.close()
        else:
            def close_all() -> None:  # runs on the server's own loop thread, where its sockets live
                for channel in list(server._map.values()):
                    channel.close()

            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout)
            self._thread = None
        server.task_dispatcher.shutdown(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


def serve(store: Store, connections: Connections, flows: Sequence[FlowLike] = (), *, host: str = "127.0.0.1",
          port: int = 0, threads: int = 4, max_body: int = DEFAULT_MAX_BODY) -> WebhookServer:
    """Receive webhooks on ``host:port`` (0 = any free port) from a daemon thread; ``close()`` stops it."""
    return WebhookServer(WebhookApp(store, connections, flows, max_body=max_body), host=host, port=port,
                         threads=threads).start()
