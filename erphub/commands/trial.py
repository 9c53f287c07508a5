"""``erphub trial run|score|report``: selection trials over the configured connections.

``run TRIAL.toml`` drives the trial's scenario through every candidate connection (``compare.trial``)
and stores the results as ``<results dir>/<run id>/results.json``. ``score RUN`` and ``report RUN``
work from that file only: they re-score with other ``--weights`` (or the criteria of a changed
``--trial`` file) without sending anything to any system.

``--seed-simulators`` first loads the trial's master data and opening balances into candidates that
are simulators on loopback (``erphub sandbox up``), through their ``/_admin/seed`` endpoint; it
refuses any connection that is not on loopback.

Exit codes: 0 done; 1 the run finished but some candidate failed outright; 2 usage, configuration or
trial-file errors (each printed with its key path).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Selection trials: the same scenario through every candidate, scored and reported.",
                  no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_REPORT_DIR = "erphub-report"


def _trial(path: Path) -> Any:
    from compare.trial import TrialInvalid, load_trial

    try:
        return load_trial(path)
    except TrialInvalid as exc:
        err.print(f"trial file {path} is invalid ({len(exc.problems)} problem(s)):", markup=False, highlight=False)
        for key, message in exc.problems:
            err.print(f"  {key}: {message}" if key else f"  {message}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    from compare.scorecard import parse_weights

    try:
        return parse_weights(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--weights") from None


def _results(run: str, results_dir: Path) -> dict[str, Any]:
    from compare.trial import load_results

    try:
        return load_results(run, results_dir)
    except (FileNotFoundError, ValueError) as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None


def _scorecard(results: dict[str, Any], trial_file: Path | None, weights: dict[str, float] | None) -> Any:
    from compare.trial import rescore

    criteria = _trial(trial_file).criteria if trial_file is not None else None
    try:
        return rescore(results, criteria=criteria, weights=weights)
    except ValueError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None


def _print_ranking(card: Any, results: dict[str, Any]) -> None:
    table = Table("rank", "system", "platform", "against", "total", "covered", title="ranking", title_justify="left")
    for s in card.systems:
        info = results["systems"][s.system]
        total = "—" if s.total is None else f"{s.total:.2f}"
        rank = f"{s.rank}=" if s.tied_with else str(s.rank)
        table.add_row(rank, s.system, info["platform"], "simulator" if info["against_simulator"] else "real",
                      total, f"{s.coverage * 100:.0f} %")
    out.print(table)
    for note in card.notes:
        out.print(f"note: {note}", markup=False, highlight=False)


def _seed(trial: Any, settings: dict[str, Any]) -> None:
    import requests

    from compare.trial import is_simulator_url

    world = trial.scenario.master_data.resolved(trial.scenario.seed).to_world_dict()
    for name in trial.trial.candidates:
        url = settings[name].url
        if not is_simulator_url(url):
            err.print(f"--seed-simulators: {name} is not on loopback; only simulators are seeded", markup=False)
            raise typer.Exit(2)
        parts = urlsplit(url)
        answer = requests.post(f"{parts.scheme}://{parts.netloc}/_admin/seed", json={"world": world}, timeout=30)
        if answer.status_code >= 300:
            err.print(f"--seed-simulators: {name} answered {answer.status_code}: {answer.text[:300]}", markup=False)
            raise typer.Exit(2)
        out.print(f"seeded {name} with {len(world['items'])} items, {len(world['warehouses'])} warehouses, "
                  f"{len(world['balances'])} opening balances", markup=False, highlight=False)


@app.command("run")
def run(
    trial_file: Annotated[Path, typer.Argument(help="The trial file (TOML).")],
    results_dir: Annotated[Optional[Path], typer.Option(help="Where runs are stored (default: the trial file's "
                                                              "results_dir).")] = None,
    seed_simulators: Annotated[bool, typer.Option("--seed-simulators", help="Load the master data into loopback "
                                                                             "simulators first.")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write the report to this directory.")] = None,
) -> None:
    """Run a trial: the scenario through every candidate, in parallel; store the results."""
    from compare.trial import TrialInvalid, run_trial
    from erphub.cli import _load_settings

    trial = _trial(trial_file)
    settings = _load_settings()
    unknown = [c for c in trial.trial.candidates if c not in settings.connections]
    if unknown:
        err.print(f"trial.candidates: {unknown[0]!r} is not a configured connection (configured: "
                  f"{', '.join(sorted(settings.connections)) or 'none'})", markup=False, highlight=False)
        raise typer.Exit(2)
    chosen = {name: settings.connections[name] for name in trial.trial.candidates}
    if seed_simulators:
        _seed(trial, chosen)
    step = max(1, trial.scenario.movements // 5)

    def progress(system: str, done: int, total: int) -> None:
        if done % step == 0 or done == total:
            out.print(f"{system}: {done}/{total}", markup=False, highlight=False)

    try:
        results = run_trial(trial, chosen, results_dir=results_dir, progress=progress, source=str(trial_file))
    except TrialInvalid as exc:
        for key, message in exc.problems:
            err.print(f"{key}: {message}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    directory = results_dir or Path(trial.trial.results_dir)
    table = Table("system", "against", "sent", "ok", "success", "accuracy", "p95 ms", "calls/doc", "docs/s",
                  title=f"trial run {results['run_id']}", title_justify="left")
    for name, info in results["systems"].items():
        m, d = info["measures"], info["documents"]
        table.add_row(name, "simulator" if info["against_simulator"] else "real", str(d["sent"]), str(d["succeeded"]),
                      _pct(m["success_rate"]), _pct(m["accuracy"]), _num(m["latency_p95_ms"], 1),
                      _num(m["api_calls_per_document"], 2), _num(m["throughput"], 1))
    out.print(table)
    from compare.trial import rescore

    card = rescore(results)
    _print_ranking(card, results)
    out.print(f"results: {directory / results['run_id'] / 'results.json'}", markup=False, highlight=False)
    if report is not None:
        _write_report(results, card, report, None)
    if any(info.get("failure") for info in results["systems"].values()):
        raise typer.Exit(1)


@app.command("score")
def score(
    run: Annotated[str, typer.Argument(help="Run id, run directory or results.json.")],
    weights: Annotated[Optional[str], typer.Option(help="criterion=weight,... e.g. success_rate=3,go_live_speed=0")]
    = None,
    trial_file: Annotated[Optional[Path], typer.Option("--trial", help="Take the criteria from this (changed) "
                                                                       "trial file.")] = None,
    results_dir: Annotated[Path, typer.Option(help="Where runs are stored.")] = Path("erphub-trials"),
) -> None:
    """Re-score a stored run (nothing is sent to any system)."""
    results = _results(run, results_dir)
    card = _scorecard(results, trial_file, _weights(weights))
    _print_ranking(card, results)


@app.command("report")
def report_command(
    run: Annotated[str, typer.Argument(help="Run id, run directory or results.json.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for report.html/.md/.json "
                                                                          "(default erphub-report/trial-<run>).")]
    = None,
    weights: Annotated[Optional[str], typer.Option(help="criterion=weight,...")] = None,
    trial_file: Annotated[Optional[Path], typer.Option("--trial", help="Criteria from this trial file.")] = None,
    results_dir: Annotated[Path, typer.Option(help="Where runs are stored.")] = Path("erphub-trials"),
) -> None:
    """Write the HTML, Markdown and JSON report of a stored run."""
    results = _results(run, results_dir)
    parsed = _weights(weights)
    card = _scorecard(results, trial_file, parsed)
    note = ", ".join(f"{k}={v:g}" for k, v in parsed.items()) if parsed else None
    _write_report(results, card, output or Path(DEFAULT_REPORT_DIR) / f"trial-{results['run_id']}",
                  f"weights {note}" if note else None)


def _write_report(results: dict[str, Any], card: Any, directory: Path, note: str | None) -> None:
    from compare.report import write_trial_report

    written = write_trial_report(results, card, directory, weights_note=note)
    for kind, path in written.items():
        out.print(f"{kind}: {path}", markup=False, highlight=False)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
