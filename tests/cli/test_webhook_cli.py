"""``erphub webhook serve`` and ``erphub sync run --webhook-port`` in their own processes, with the
test-only signing connector (tests.sync.test_webhooks.HookConnector) registered as platform
``reference-hooks``, a reference ERP as the target, and signed requests over a real socket."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from erphub.cli import app
from sync.store import Movement, Outbox, Store, WebhookDelivery
from tests.conformance.kit import (
    STANDARD_WORLD,
    Clock,
    expected_change,
    ledger_change,
    ledger_snapshot,
    movement,
)
from tests.reference.simulator import PASSWORD, USER, ReferenceErp
from tests.sync.test_webhooks import HOOK_SECRET, HookConnector, body_of, post

ROOT = Path(__file__).resolve().parents[2]
ENV = {"REF_PASSWORD": PASSWORD, "HOOK_SECRET": HOOK_SECRET, "COLUMNS": "220"}
# The CLI, with the test-only connector registered first (a configuration names its platform).
BOOT = ("import sys; from connectors import registry; from tests.sync.test_webhooks import HookConnector; "
        "from tests.reference.connector import ReferenceConnector; registry.register(HookConnector); "
        "registry.register(ReferenceConnector); from erphub.cli import app; sys.argv[0] = 'erphub'; app()")
LISTENING = re.compile(r"webhooks on (http://\S+?)/webhooks/<connection>")


@pytest.fixture
def sims() -> Iterator[dict]:
    with ExitStack() as stack:
        clock = Clock()
        running = {}
        for name in ("src", "t1"):
            sim = ReferenceErp(clock=clock)
            sim.seed({"world": STANDARD_WORLD.to_dict()})
            running[name] = (sim, stack.enter_context(sim.serve()).url)
        yield running


def _config(tmp_path: Path, sims: dict) -> Path:
    config = tmp_path / "erphub.toml"
    config.write_text(textwrap.dedent(f"""\
        [store]
        url = "sqlite:///{tmp_path / 'hub.db'}"

        [broker]
        url = "memory://"

        [connections.src]
        platform = "reference-hooks"
        url = "{sims['src'][1]}"
        user = "{USER}"
        password = {{ env = "REF_PASSWORD" }}
        webhook_secret = {{ env = "HOOK_SECRET" }}

        [connections.t1]
        platform = "reference"
        url = "{sims['t1'][1]}"
        user = "{USER}"
        password = {{ env = "REF_PASSWORD" }}

        [[flows]]
        name = "moves"
        kind = "movements"
        source = "src"
        targets = ["t1"]
        every = "1h"
        """), encoding="utf-8")
    return config


@contextmanager
def running(config: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """The CLI in its own process until it prints where it receives webhooks; stopped with SIGTERM."""
    process = subprocess.Popen([sys.executable, "-c", BOOT, "--config", str(config), *args], cwd=ROOT,
                               env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            lines.append(line)
            found = LISTENING.search(line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(lines)
        yield process, url, lines
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        lines.append(output)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _counts(tmp_path: Path) -> tuple[int, int, int]:
    with Store.open(f"sqlite:///{tmp_path / 'hub.db'}") as store, store.session() as s:
        return tuple(int(s.scalar(select(func.count()).select_from(m)) or 0)  # type: ignore[return-value]
                     for m in (WebhookDelivery, Movement, Outbox))


def test_webhook_serve_takes_in_signed_deliveries_once_and_refuses_the_rest(tmp_path, sims):
    # Given `erphub webhook serve` on any free port
    issue = movement("sales_issue", lines=[("TS-001", "1")], source="WH01")
    body = body_of("data_create", "movements", [issue])
    with running(_config(tmp_path, sims), "webhook", "serve", "--port", "0") as (process, url, lines):
        # When a movement is pushed, pushed again with the same delivery id, and forged
        first = post(url, body, delivery="cli-1")
        again = post(url, body, delivery="cli-1")
        forged = post(url, body, delivery="cli-2", secret="not-the-secret")
    # Then it was taken in once (one outbox row for the target), the forgery refused, and the
    # process stopped cleanly on SIGTERM without printing a secret
    output = "".join(lines)
    assert process.returncode == 0, output
    assert (first.status_code, first.text, again.text, forged.status_code) == (200, "ok", "duplicate", 401)
    assert _counts(tmp_path) == (1, 1, 1)
    assert "webhook receiver stopped" in output
    assert HOOK_SECRET not in output and PASSWORD not in output


def test_sync_run_with_a_webhook_port_delivers_what_is_pushed(tmp_path, sims):
    # Given the embedded engine receiving webhooks
    t1 = sims["t1"][0]
    before = ledger_snapshot(t1)
    issue = movement("sales_issue", lines=[("TS-002", "2")], source="WH01")
    with running(_config(tmp_path, sims), "sync", "run", "--webhook-port", "0") as (process, url, lines):
        # When the source pushes a movement
        assert post(url, body_of("data_create", "movements", [issue]), delivery="run-1").text == "ok"
        # Then the engine delivers it to the target of the movements flow
        deadline = time.monotonic() + 60
        while ledger_change(before, ledger_snapshot(t1)) != expected_change(issue):
            assert time.monotonic() < deadline, "not delivered within 60 s"
            time.sleep(0.2)
    assert process.returncode == 0, "".join(lines)
    assert "since start" in "".join(lines)
    assert len(t1.documents_for(_key(tmp_path))) == 1


def _key(tmp_path: Path) -> str:
    with Store.open(f"sqlite:///{tmp_path / 'hub.db'}") as store, store.session() as s:
        return s.scalars(select(Outbox.idempotency_key)).one()


def test_webhook_serve_on_a_busy_port_exits_2(tmp_path, sims, runner, reference_platform):
    from connectors import registry

    registry.register(HookConnector)
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = runner.invoke(app, ["--config", str(_config(tmp_path, sims)), "webhook", "serve", "--port",
                                         str(port)], env=ENV)
    finally:
        registry.unregister(HookConnector.platform)
    assert result.exit_code == 2, result.output
    assert f"cannot receive webhooks on 127.0.0.1:{port}" in result.output
