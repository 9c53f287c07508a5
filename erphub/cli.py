"""The ``erphub`` command line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from erphub import log

app = typer.Typer(help="erphub: inventory integration hub for Kingdee, Yonyou U8, SAP Business One and Jiandaoyun.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
sandbox_app = typer.Typer(help="Run the vendor API simulators on loopback.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

out = Console()
err = Console(stderr=True)


class _State:
    config_path: Path | None = None


state = _State()


@app.callback()
def main(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", envvar="ERPHUB_CONFIG",
                                                   help="Configuration file (default ./erphub.toml).")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = "WARNING",
    log_format: Annotated[str, typer.Option(help="text (readable) or json.")] = "text",
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("must be 'text' or 'json'", param_hint="--log-format")
    log.configure(log_level, log_format)  # type: ignore[arg-type]
    state.config_path = config


def _load_settings(ctx: typer.Context | None = None):
    """The configuration, or exit 2 listing every problem. With ``ctx`` the file named by the root
    ``--config`` option is read from the click context, which also works when the CLI runs as
    ``python -m erphub.cli`` (a second copy of this module, with its own ``state``)."""
    from erphub.config import ConfigInvalid, load

    try:
        return load(ctx.find_root().params.get("config") if ctx is not None else state.config_path)
    except ConfigInvalid as exc:
        err.print(f"[bold red]configuration is invalid[/] ({len(exc.problems)} problem(s)):", highlight=False)
        for path, message in exc.problems:
            err.print(f"  {path}: {message}", markup=False, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example configuration.")] = Path("erphub.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example configuration."""
    from erphub.config import write_example

    if path.exists() and not force:
        err.print(f"{path} exists; use --force to overwrite it", markup=False)
        raise typer.Exit(1)
    write_example(path, overwrite=force)
    out.print(f"wrote {path}", markup=False)


@app.command()
def check() -> None:
    """Authenticate to every configured connection and make one cheap read."""
    from connectors import registry
    from connectors.errors import ConnectorError
    from connectors.redaction import redact_text

    settings = _load_settings()
    if not settings.connections:
        out.print("no connections configured (see `erphub init`)")
        return
    table = Table("connection", "platform")
    # fold, never truncate: an operator must see the whole (redacted) error
    table.add_column("url", overflow="fold")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    table.add_column("ms", justify="right")
    failed = 0
    for name, conn in settings.connections.items():
        started = time.perf_counter()
        try:
            with registry.get(conn.platform)(conn, name=name) as connector:
                result = connector.check()
            status, detail = ("ok" if result.ok else "FAILED"), result.detail
            failed += 0 if result.ok else 1
        except ConnectorError as exc:
            status, detail = f"FAILED ({exc.kind})", str(exc)
            failed += 1
        except Exception as exc:  # a connector bug must not hide the other connections' results
            status, detail = "FAILED (bug)", redact_text(f"{type(exc).__name__}: {exc}")
            failed += 1
        elapsed = f"{(time.perf_counter() - started) * 1000:.0f}"
        table.add_row(name, conn.platform, conn.url, status, detail, elapsed)
    out.print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def schema(
    model: Annotated[Optional[str], typer.Argument(help="One model name, e.g. Movement; all when omitted.")] = None,
) -> None:
    """Print the JSON Schema of the canonical models."""
    from canonical import json_schemas

    schemas = json_schemas()
    if model is not None:
        if model not in schemas:
            err.print(f"unknown model {model!r}; known: {', '.join(sorted(schemas))}", markup=False)
            raise typer.Exit(2)
        schemas = schemas[model]
    sys.stdout.write(json.dumps(schemas, indent=2, ensure_ascii=False) + "\n")


@sandbox_app.command("up")
def sandbox_up(
    names: Annotated[Optional[list[str]], typer.Argument(help="Simulators to start; all when omitted.")] = None,
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    base_port: Annotated[int, typer.Option(help="First port (the others follow); 0 = ephemeral ports.")] = 0,
    seconds: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")] = None,
) -> None:
    """Serve the vendor simulators on loopback and print their URLs."""
    # The CLI is the one production module allowed to import the sandbox (DESIGN.md §2).
    from sandbox import registry as simulators

    if not host.startswith("127.") and host not in ("localhost", "::1"):
        err.print(f"refusing to listen on {host}: simulators serve loopback only", markup=False)
        raise typer.Exit(2)
    try:
        served = simulators.serve_all(names or None, host=host, base_port=base_port)
    except simulators.UnknownSimulator as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if not served:
        err.print("no simulators are available yet", markup=False)
        raise typer.Exit(1)
    table = Table("simulator", "url", "admin")
    for entry in served:
        table.add_row(entry.name, entry.url, f"{entry.url}/_admin/ledger")
    out.print(table)
    out.print("serving; press Ctrl-C to stop", highlight=False)
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        simulators.stop_all(served)


# Sub-commands live in erphub/commands/, one module each. They are imported here, after `app`
# and the helpers they use exist; some register themselves on `app`, others bring a Typer.
from erphub.commands import codemap, errors, status, sync, trial, webhook  # noqa: E402
from erphub.commands import demo, migrate, push, reconcile  # noqa: E402,F401 - register themselves

app.add_typer(sync.sync_app, name="sync")
app.command("worker")(sync.worker)
app.add_typer(codemap.app, name="codemap")
app.add_typer(errors.app, name="errors")
app.add_typer(trial.app, name="trial")
app.add_typer(webhook.app, name="webhook")
app.command("status")(status.status)

if __name__ == "__main__":  # pragma: no cover - `python -m erphub` is the supported spelling
    from erphub.cli import app as registered  # the commands registered on the importable module

    registered()
