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
    log_format: Annotated[str, typer.Option(help="console (readable) or json.")] = "console",
) -> None:
    if log_format not in ("console", "json"):
        raise typer.BadParameter("must be 'console' or 'json'", param_hint="--log-format")
    log.configure(log_level, log_format)  # type: ignore[arg-type]
    state.config_path = config


def _load_settings():
    from erphub.config import ConfigInvalid, load

    try:
        return load(state.config_path)
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

    settings = _load_settings()
    if not settings.connections:
        out.print("no connections configured (see `erphub init`)")
        return
    table = Table("connection", "platform", "url", "result", "detail", "ms")
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


if __name__ == "__main__":  # pragma: no cover
    app()
