"""``erphub sync once|run`` and ``erphub worker`` through typer's runner, against running simulators
(a reference ERP as the source of movements, the Kingdee simulator as the target), with a
temporary configuration whose secrets come from the environment."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from erphub.cli import app
from sandbox.kingdee_auth import DEFAULT_ACCT_ID, DEFAULT_APP_ID, DEFAULT_APP_SECRET, DEFAULT_USER
from tests.conformance.kit import STANDARD_WORLD, Clock, expected_change, ledger_change, ledger_snapshot, movement
from tests.conformance.targets.kingdee import simulator as kingdee_simulator
from tests.reference.connector import ReferenceConnector, ReferenceSettings
from tests.reference.simulator import PASSWORD, USER, ReferenceErp

ENV = {"KD_APP_SECRET": DEFAULT_APP_SECRET, "REF_PASSWORD": PASSWORD, "COLUMNS": "220"}


def kingdee_block(name: str, url: str, **extra: object) -> str:
    lines = [f"[connections.{name}]", 'platform = "kingdee"', f'url = "{url}/k3cloud/"',
             f'acct_id = "{DEFAULT_ACCT_ID}"', f'username = "{DEFAULT_USER}"', 'auth = "signature"',
             f'app_id = "{DEFAULT_APP_ID}"', 'app_secret = { env = "KD_APP_SECRET" }']
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def reference_block(name: str, url: str) -> str:
    return textwrap.dedent(f"""\
        [connections.{name}]
        platform = "reference"
        url = "{url}"
        user = "{USER}"
        password = {{ env = "REF_PASSWORD" }}
        """)






@pytest.fixture
def sims() -> Iterator[dict]:
    with ExitStack() as stack:
        clock = Clock()
        running = {}
        for name, sim in (("kd", kingdee_simulator(clock=clock)), ("ref", ReferenceErp(clock=clock))):
            sim.seed({"world": STANDARD_WORLD.to_dict()})
            running[name] = (sim, stack.enter_context(sim.serve()).url)
        yield running


def _config(tmp_path: Path, sims: dict, flows: str) -> Path:
    config = tmp_path / "erphub.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n\n[broker]\nurl = "memory://"\n\n'
        + kingdee_block("kd", sims["kd"][1]) + "\n" + reference_block("ref", sims["ref"][1]) + "\n" + flows,
        encoding="utf-8")
    return config


FLOWS = textwrap.dedent("""\
    [[flows]]
    name = "movements_ref_to_kd"
    kind = "movements"
    source = "ref"
    targets = ["kd"]
    every = "1s"

    [[flows]]
    name = "master_kd"
    kind = "master_data"
    source = "kd"
    targets = ["ref"]
    every = "5m"
    """)


def _row(output: str, flow: str) -> list[str]:
    line = next(line for line in output.splitlines() if flow in line)
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def test_sync_once_pulls_enqueues_delivers_and_summarises(tmp_path, runner, reference_platform, sims):
    # Given 4 movements posted in the reference ERP and a config with a flow ref → kd
    source_sim, source_url = sims["ref"]
    source = ReferenceConnector(ReferenceSettings(url=source_url, user=USER, password=PASSWORD), name="ref")
    moves = [movement("transfer", reference=f"CLI-{n}", lines=[("TS-001", "1")]) for n in range(4)]
    for m in moves:
        source.push(m, key=f"CLIKEY{m.reference[-1]}")
    source.close()
    kd_sim = sims["kd"][0]
    before = ledger_snapshot(kd_sim)
    config = _config(tmp_path, sims, FLOWS)
    # When `erphub sync once` runs
    result = runner.invoke(app, ["--config", str(config), "sync", "once", "--timeout", "60"], env=ENV)
    # Then it succeeded, printed a row per flow with the counts, and Kingdee got each movement once
    assert result.exit_code == 0, result.output
    flow, kind, read, enqueued, delivered, failed, dead = _row(result.output, "movements_ref_to_kd")[:7]
    assert (kind, read, enqueued, delivered, failed, dead) == ("movements", "4", "4", "4", "0", "0")
    assert _row(result.output, "master_kd")[1] == "master_data"
    assert ledger_change(before, ledger_snapshot(kd_sim)) == expected_change(*moves)
    # And a second run finds nothing new to send
    again = runner.invoke(app, ["--config", str(config), "sync", "once", "--timeout", "60"], env=ENV)
    assert again.exit_code == 0, again.output
    assert _row(again.output, "movements_ref_to_kd")[3:5] == ["0", "0"]
    assert ledger_change(before, ledger_snapshot(kd_sim)) == expected_change(*moves)
    # No secret was printed
    assert DEFAULT_APP_SECRET not in result.output + again.output and PASSWORD not in result.output


def test_sync_run_for_a_while_then_stops_with_a_summary(tmp_path, runner, reference_platform, sims):
    source_sim, source_url = sims["ref"]
    source = ReferenceConnector(ReferenceSettings(url=source_url, user=USER, password=PASSWORD), name="ref")
    moves = [movement("transfer", reference=f"RUNCLI-{n}", lines=[("TS-001", "1")]) for n in range(2)]
    for m in moves:
        source.push(m, key=f"RUNCLI{m.reference[-1]}")
    source.close()
    config = _config(tmp_path, sims, FLOWS)
    result = runner.invoke(app, ["--config", str(config), "sync", "run", "--for", "2.5"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "since start" in result.output
    assert _row(result.output.split("since start")[-1], "movements_ref_to_kd")[4] == "2"


def test_worker_refuses_the_in_process_broker(tmp_path, runner, reference_platform, sims):
    config = _config(tmp_path, sims, "")
    result = runner.invoke(app, ["--config", str(config), "worker"], env=ENV)
    assert result.exit_code == 2 and "memory://" in result.output


def test_a_failing_flow_exits_1_and_names_the_problem(tmp_path, runner, reference_platform, sims):
    sims["ref"][0].faults.set({"errors": [{"status": 503}]})
    config = _config(tmp_path, sims, FLOWS)
    result = runner.invoke(app, ["--config", str(config), "sync", "once", "--timeout", "30"], env=ENV)
    assert result.exit_code == 1
    assert "movements" in _row(result.output, "movements_ref_to_kd")[-1]


def test_sync_run_stops_cleanly_on_sigterm(tmp_path, sims):
    # Given `erphub sync run` in its own process with a balances flow on the Kingdee simulator
    config = tmp_path / "erphub.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n\n' + kingdee_block("kd", sims["kd"][1])
                      + '\n[[flows]]\nname = "snap"\nkind = "balances"\nsource = "kd"\nevery = "1s"\n',
                      encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-m", "erphub.cli", "--config", str(config), "sync", "run"],
                               cwd=root, env={**os.environ, **ENV, "PYTHONPATH": str(root)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        # When it is sent SIGTERM
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # Then it stopped by itself, with its summary
    assert process.returncode == 0, "".join(lines) + output
    assert "since start" in output and "snap" in output
