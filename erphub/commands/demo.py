"""``erphub demo``: start the simulators, run the whole hub against them (:mod:`erphub.demo`), stop them.

This module and ``erphub/cli.py`` are the only production modules that import the sandbox
(DESIGN.md §2): the demo starts the simulators in-process, on loopback and ephemeral ports. The
phases themselves (:func:`erphub.demo.run_demo`) speak to the simulators as any client would.

Exit codes: 0 every check held (no duplicates, zero variance after the sync settled, ...); 1 a
check failed or a phase could not go on (the message says which); 2 usage errors.
"""
from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Annotated, Optional

import typer

from erphub.cli import app, err, out

#: simulators of the demo itself (Kingdee seeded with the company, SAP B1 migrated into) and one
#: fresh simulator per trial candidate: (connection name, simulator, connector transport)
TRIAL_CANDIDATES = (("kingdee", "kingdee", "webapi"), ("sap_b1", "sap_b1", "service_layer"),
                    ("sap_b1_di", "sap_b1", "di_server"), ("jiandaoyun", "jiandaoyun", "v5"))


@app.command("demo")
def demo(
    output: Annotated[Path, typer.Option("--output", help="Directory for the reports and the demo's store.")]
        = Path("erphub-report"),
    skus: Annotated[int, typer.Option("--skus", min=20, max=20_000, help="Finished-goods SKUs of the apparel "
                                                                          "company.")] = 2000,
    sync_seconds: Annotated[Optional[float], typer.Option("--sync-seconds", min=2, help="How long the continuous "
                                                          "sync runs (default 100, or 10 with --quick).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A short sync and a small trial (for tests).")] = False,
) -> None:
    """Run the hub end to end against simulators: migrate, sync with a fault, reconcile, trial, report."""
    from sandbox import registry as simulators
    from sandbox.kingdee_auth import DEFAULT_ACCT_ID, DEFAULT_APP_ID, DEFAULT_APP_SECRET, DEFAULT_USER

    from erphub.demo import DemoFailed, DemoOptions, DemoSandbox, KingdeeLogin, SapLogin, run_demo

    if output.exists() and not output.is_dir():
        err.print(f"--output {output} is a file, not a directory", markup=False)
        raise typer.Exit(2)
    options = DemoOptions.quick(output, skus) if quick else DemoOptions(output=output, skus=skus)
    if sync_seconds is not None:
        options = dataclasses.replace(options, sync_seconds=sync_seconds)
    names = ["kingdee", "sap_b1", *(simulator for _, simulator, _ in TRIAL_CANDIDATES)]
    served = simulators.serve_all(names)
    try:
        # a fresh SAP B1 password and Jiandaoyun API key per run: they reach the hub only through
        # environment variables
        password = secrets.token_urlsafe(12)
        api_key = f"jdy-demo-{secrets.token_hex(12)}"
        for entry in served:
            if entry.name == "sap_b1":
                entry.server.app.seed({"service_layer": {"users": {"manager": password}}})
            elif entry.name == "jiandaoyun":
                entry.server.app.seed({"api_keys": [api_key]})
        trial = {name: (platform, transport, entry.url)
                 for (name, platform, transport), entry in zip(TRIAL_CANDIDATES, served[2:])}
        sandbox = DemoSandbox(
            kingdee=served[0].url, sap_b1=served[1].url,
            kingdee_login=KingdeeLogin(DEFAULT_ACCT_ID, DEFAULT_USER, DEFAULT_APP_ID, DEFAULT_APP_SECRET),
            sap_login=SapLogin("SBODEMOUS", "manager", password), trial=trial, jiandaoyun_api_key=api_key)
        try:
            result = run_demo(sandbox, options, console=out)
        except DemoFailed as exc:
            err.print(f"demo failed: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    finally:
        simulators.stop_all(served)
    if not result.ok:
        err.print("demo finished, but these checks failed:", markup=False)
        for line in result.failed:
            err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(f"[bold green]every check passed[/] in {result.timings.get('total', 0):.0f} s; open "
              f"{(options.output / 'index.html').resolve()}", highlight=False, soft_wrap=True)
