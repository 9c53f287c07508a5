"""``erphub webhook serve``: receive the webhooks vendors push (sync.webhooks, sync.webhook_server).

- ``erphub webhook serve --port P [--host H]`` — the receiver alone, against the configured store
  and connections, until Ctrl-C / SIGTERM (or ``--for``). Each request to
  ``POST /webhooks/<connection>`` is verified by that connection's connector, recorded once per
  delivery id, and routed: movements into the outbox for the targets of the connection's
  ``movements`` flows, master data into the store. Delivery is left to ``erphub sync run`` or
  ``erphub worker``.
- ``erphub sync run --webhook-port P`` runs the same receiver inside the embedded engine.

It listens on loopback by default and speaks plain HTTP: to take webhooks from the internet, put
a TLS-terminating reverse proxy in front of it.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from erphub.commands.sync import _stop_on_signals

app = typer.Typer(help="Receive webhooks that vendors push (Jiandaoyun data push).", no_args_is_help=True)

out = Console()
err = Console(stderr=True)

WebhookHost = Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")]
MaxBody = Annotated[int | None, typer.Option("--max-body", min=1, help="Largest request body accepted, in bytes "
                                                "(default 1 MiB).")]


@contextmanager
def receiver(store: Any, connections: Any, flows: Sequence[Any], port: int | None, host: str = "127.0.0.1", *,
             threads: int = 4, max_body: int | None = None) -> Iterator[Any]:
    """The webhook receiver while the block runs (None when ``port`` is None); exits 2 when it
    cannot listen."""
    if port is None:
        yield None
        return
    from sync.webhook_server import DEFAULT_MAX_BODY, PREFIX, serve

    try:
        server = serve(store, connections, flows, host=host, port=port, threads=threads,
                       max_body=max_body or DEFAULT_MAX_BODY)
    except (OSError, ValueError) as exc:
        err.print(f"cannot receive webhooks on {host}:{port}: {exc}", markup=False)
        raise typer.Exit(2) from None
    out.print(f"webhooks on {server.url}{PREFIX}<connection>", highlight=False)
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        err.print("warning: plain HTTP on a non-loopback address; put a TLS-terminating proxy in front of it",
                  markup=False)
    try:
        yield server
    finally:
        server.close()


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0 = any free port).")],
    host: WebhookHost = "127.0.0.1",
    threads: Annotated[int, typer.Option("--threads", min=1, help="Request threads.")] = 4,
    max_body: MaxBody = None,
    for_seconds: Annotated[float | None, typer.Option("--for", min=0, help="Stop after this many seconds.")] = None,
) -> None:
    """Receive webhooks on POST /webhooks/<connection> until Ctrl-C or SIGTERM."""
    from erphub.cli import _load_settings  # here, not at the top: erphub.cli imports this module
    from sync.connections import Connections
    from sync.store import Store

    settings = _load_settings(ctx)
    store = Store.open(settings.store.url)
    try:
        store.upgrade()
        with Connections(store, settings.connections) as connections, _stop_on_signals() as stop, \
                receiver(store, connections, settings.flows, port, host, threads=threads, max_body=max_body):
            out.print(f"receiving for {', '.join(connections.names()) or 'no connections'}; Ctrl-C to stop",
                      highlight=False)
            deadline = None if for_seconds is None else time.monotonic() + for_seconds
            while not stop.wait(0.2):
                if deadline is not None and time.monotonic() >= deadline:
                    break
    finally:
        store.close()
    out.print("webhook receiver stopped", highlight=False)
