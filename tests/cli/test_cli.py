"""The command line, driven through typer's runner (no subprocesses)."""
from __future__ import annotations

import json
import logging
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from connectors import registry
from connectors.base import CheckResult, ConnectionSettings, Connector
from connectors.errors import AuthError
from connectors.http import HttpClient
from erphub.cli import app
from erphub.config import load

SECRET = "pa55-Wörd-7f3c9e"  # what an operator would put in KINGDEE_PASSWORD




class _EchoHandler(BaseHTTPRequestHandler):
    """A careless vendor: refuses the login and echoes the whole request body back."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = b'{"error": "login refused", "request": ' + json.dumps(body.decode()).encode() + b"}"
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


class LeakySettings(ConnectionSettings):
    username: str
    password: SecretStr


class LeakyConnector(Connector):
    """Tries its best to leak: the password goes in the body, the answer into the error."""

    platform = "leakyerp"
    Settings = LeakySettings

    def check(self) -> CheckResult:
        with HttpClient(self.settings.url, connect_timeout=2, read_timeout=5) as http:
            resp = http.request("POST", "/login", idempotent=True,
                                json={"user": self.settings.username,
                                      "password": self.settings.password.get_secret_value()})
            logging.getLogger("leakyerp").info("login answered %s", resp.text)
            raise AuthError(f"login refused: {resp.text} (we sent {self.settings.password.get_secret_value()})")

    capabilities = read = read_balances = push = find = None  # type: ignore[assignment]


LeakyConnector.__abstractmethods__ = frozenset()


@pytest.fixture
def leaky_server() -> Iterator[str]:
    registry.register(LeakyConnector)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        registry.unregister(LeakyConnector.platform)


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "check", "schema", "sandbox"):
        assert command in result.output


def test_init_writes_a_loadable_example_and_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "erphub.toml"
    # When init runs twice without --force
    first = runner.invoke(app, ["init", str(target)])
    second = runner.invoke(app, ["init", str(target)])
    # Then the first wrote a configuration that loads, and the second left it alone
    assert first.exit_code == 0 and target.exists()
    assert load(target).store.url == "sqlite:///erphub.db"
    assert second.exit_code == 1 and "exists" in second.output
    assert runner.invoke(app, ["init", str(target), "--force"]).exit_code == 0


def test_schema_prints_every_canonical_model(runner: CliRunner) -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schemas = json.loads(result.stdout)
    assert {"Item", "Warehouse", "Movement", "StockBalance"} <= set(schemas)
    assert "lines" in schemas["Movement"]["properties"]
    one = runner.invoke(app, ["schema", "Movement"])
    assert json.loads(one.stdout)["title"] == "Movement"
    assert runner.invoke(app, ["schema", "Nope"]).exit_code == 2


def test_check_reports_an_invalid_configuration_with_key_paths(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[store]\nurl = 5\n[connections.x]\nplatform = "nope"\n', encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "check"])
    assert result.exit_code == 2
    assert "store.url" in result.output and "connections.x.platform" in result.output


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_check_never_prints_the_secret(runner: CliRunner, tmp_path: Path, leaky_server: str,
                                       monkeypatch: pytest.MonkeyPatch, log_format: str) -> None:
    # Given a connection whose password comes from the environment, and a vendor that echoes it
    monkeypatch.setenv("LEAKY_PASSWORD", SECRET)
    config = tmp_path / "erphub.toml"
    config.write_text(textwrap.dedent(f"""
        [connections.leaky]
        platform = "leakyerp"
        url = "{leaky_server}"
        username = "api"
        password = {{ env = "LEAKY_PASSWORD" }}
    """), encoding="utf-8")
    # When check runs with the most talkative logging
    result = runner.invoke(app, ["--config", str(config), "--log-level", "DEBUG", "--log-format", log_format, "check"])
    # Then the connection is reported as failed, and the secret appears nowhere, not even split
    # across the folded lines of the table
    flat = "".join(ch for ch in result.output if not ch.isspace() and ch not in "│┃")
    assert result.exit_code == 1
    assert "FAILED(auth)" in flat
    assert SECRET not in result.output and SECRET not in flat
    assert "(wesent***)" in flat  # the error itself is still shown, only masked


def test_sandbox_up_serves_registered_simulators_and_stops(runner: CliRunner) -> None:
    from sandbox import registry as simulators
    from tests.sandbox.toy import ToyErp

    simulators.register("toy", ToyErp)
    try:
        result = runner.invoke(app, ["sandbox", "up", "toy", "--seconds", "0.3"])
    finally:
        simulators.unregister("toy")
    assert result.exit_code == 0
    assert "toy" in result.output and "http://127.0.0.1:" in result.output


def test_sandbox_up_refuses_non_loopback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sandbox", "up", "--host", "0.0.0.0", "--seconds", "0"])
    assert result.exit_code == 2


def test_python_dash_m_erphub_has_every_command():
    import subprocess
    import sys

    # `python -m` runs the CLI module as __main__; commands that register themselves on
    # erphub.cli must still be there
    for module in ("erphub", "erphub.cli"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                timeout=60, env={"COLUMNS": "200", "PATH": ""})
        assert result.returncode == 0, result.stderr
        for command in ("migrate", "push", "reconcile", "demo", "sync", "errors", "trial", "status"):
            assert command in result.stdout, (module, command)
