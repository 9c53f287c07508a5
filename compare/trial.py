"""Selection trials: the same scenario through every candidate connector, measured, stored, re-scorable.

A trial file (TOML, :class:`TrialFile`) names the candidate connections, the scenario
(:mod:`compare.scenario`) and the committee's criteria (:mod:`compare.scorecard`). Problems in it are
reported all at once with their key paths (``scenario.concurrency: must be at least 1``), as a
:class:`TrialInvalid`.

What :func:`run_trial` does for each candidate, all candidates at the same time (one thread each):

1. **Master data.** Warehouses, items and partners are written with ``upsert`` where the connector
   can (``capabilities.writable``); otherwise the system is assumed to be seeded with them already,
   and the results say so per entity.
2. **Opening stock** is read with ``read_balances`` (the items of the master data only), so the
   expected ledger starts from what the system really holds.
3. **Drive.** The same seeded movement plan goes through the connector's ``push`` directly, from a
   thread pool of ``scenario.concurrency`` workers, each with its own connector (HTTP sessions are
   not shared between threads). The outbox is deliberately not used: its queueing, leases and
   retries would add the engine's own latency and retry policy to every vendor's figures, and a
   trial compares vendors, not our engine. Each movement gets the engine's idempotency key for
   (reference, candidate) (:func:`sync.push.idempotency_key`); a receipt whose stock is not posted
   yet is pushed again with the same key (at most twice more), as the engine would. A movement not
   started within ``scenario.duration_cap`` seconds is not sent and counted as such.
4. **Ending stock** is read again and compared with the expected ledger: opening + the stock deltas
   of the movements that succeeded. Accuracy is the share of item-warehouse positions that agree.

Measured per candidate: success rate (succeeded / sent), error kinds, latency per process (p50/p95
over every push, successful or not), API calls per document (HTTP requests of the drive phase,
logins included, from each connector's :class:`connectors.http.HttpClient` counters, divided by the
documents sent), throughput (successful documents per second of the drive's wall time) and accuracy.

Results are one JSON file, ``<results_dir>/<run id>/results.json``: the trial file as loaded, every
figure, and the raw latencies. :func:`rescore` turns them into a scorecard with other weights or
criteria without touching any system.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import secrets
import threading
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from canonical import Movement
from compare.scenario import PROCESS_LABELS, MasterData, PlannedMovement, Scenario, apply_movements, plan_movements
from compare.scorecard import Criteria, Scorecard, effective_criteria, score
from connectors import registry
from connectors.base import ConnectionSettings, Connector, Entity
from connectors.errors import ConnectorError
from connectors.http import HttpClient
from connectors.redaction import redact_text
from sync.push import idempotency_key

# A complete trial file; every key but [trial] has a default (see the models below).
TRIAL_EXAMPLE = """\
[trial]
name = "2026 仓储系统选型"
candidates = ["kingdee_test", "sap_test"]      # connection names from erphub.toml
results_dir = "erphub-trials"                   # runs are stored as <results_dir>/<run id>/results.json

[scenario]
seed = 42                  # same seed, same documents
movements = 200            # documents per candidate
concurrency = 4            # worker threads per candidate
duration_cap = "5m"        # documents not started by then are not sent
lines_per_document = [1, 3]
one_warehouse_per_document = false   # true: a document's lines share its warehouse(s), as a header-warehouse form needs
quantity = [1, 10]
document_date = 2024-03-01

[scenario.mix]             # relative shares of the standard processes
purchase_receipt = 25
sales_issue = 35
transfer = 10
count_gain = 5
count_loss = 5
sales_return = 10
purchase_return = 10

[scenario.master_data.generate]   # or items/warehouses/partners/balances written out
items = 50
warehouses = 3
opening = [50, 200]

[criteria]
defaults = true            # the article's four rated criteria, weight 1 each
article_ratings = true     # the article's table as rater "article", by platform
missing = "exclude"        # or "zero"

[criteria.rated.go_live_speed]
weight = 2
[criteria.rated.go_live_speed.ratings.kingdee_test]
wang = 7
li = 6

[criteria.rated.local_support]   # a criterion of the committee's own
label = "本地支持 local support"
ratings = { kingdee_test = { wang = 9 }, sap_test = { wang = 6 } }

[criteria.measured.success_rate]     # listing [criteria.measured] replaces the default measured set
weight = 2
method = "target"
best = 1.0
worst = 0.8
[criteria.measured.accuracy]
weight = 2
[criteria.measured.latency_p95_ms]
weight = 1
method = "ratio"
[criteria.measured.api_calls_per_document]
weight = 1
[criteria.measured.throughput]
weight = 1
method = "minmax"
"""

RESULTS_FORMAT = "erphub-trial-results/1"
RESULTS_FILE = "results.json"
DEFAULT_RESULTS_DIR = "erphub-trials"
MAX_ERRORS_KEPT = 50
MAX_MISMATCHES_KEPT = 50
UPSERT_CHUNK = 100

ConnectorFactory = Callable[[str, ConnectionSettings], Connector]
Progress = Callable[[str, int, int], None]  # system, documents done, documents planned


# ---------------------------------------------------------------------------------------------
# The trial file


class TrialSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    candidates: list[str] = Field(min_length=1, description="configured connection names")
    results_dir: str = DEFAULT_RESULTS_DIR

    @field_validator("candidates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen = set()
        for name in value:
            if name in seen:
                raise ValueError(f"{name!r} is listed twice")
            seen.add(name)
        return value


class TrialFile(BaseModel):
    """The whole trial file: ``[trial]``, ``[scenario]`` and ``[criteria]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trial: TrialSection
    scenario: Scenario = Field(default_factory=Scenario)
    criteria: Criteria = Field(default_factory=Criteria)

    @model_validator(mode="after")
    def _ratings_name_candidates(self) -> TrialFile:
        candidates = set(self.trial.candidates)
        for key, crit in self.criteria.rated.items():
            for system in crit.ratings:
                if system not in candidates:
                    raise ValueError(f"criteria.rated.{key}.ratings.{system}: not a candidate "
                                     f"(candidates: {', '.join(self.trial.candidates)})")
        for system in self.criteria.products:
            if system not in candidates:
                raise ValueError(f"criteria.products.{system}: not a candidate")
        return self


class TrialInvalid(Exception):
    """The trial file has problems; ``problems`` lists ``(key path, message)``."""

    def __init__(self, problems: Iterable[tuple[str, str]], source: Path | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{p}: {m}" if p else m for p, m in self.problems)


_LEADING_PATH = re.compile(r"^([A-Za-z_][\w\-]*(?:\[\d+\])?(?:\.[\w\-]+(?:\[\d+\])?)*): (.+)$", re.S)


def load_trial(path: str | Path) -> TrialFile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrialInvalid([("", f"{path}: no such file")], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise TrialInvalid([("", f"{path}: not valid TOML ({exc})")], path) from None
    return parse_trial(data, source=path)


def parse_trial(data: Mapping[str, Any], *, source: Path | None = None) -> TrialFile:
    try:
        return TrialFile.model_validate(data)
    except ValidationError as exc:
        raise TrialInvalid(_problems(exc, data), source) from None


def _problems(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        # follow the input, so union member tags and validator names (not places in the file) are left out
        path, current = "", data
        for part in error["loc"]:
            if isinstance(current, Mapping) and isinstance(part, str):
                path = f"{path}.{part}" if path else part
                current = current.get(part)
            elif isinstance(current, list | tuple) and isinstance(part, int):
                path += f"[{part}]"
                current = current[part] if 0 <= part < len(current) else None
        message = str(error["msg"])
        for lead in ("Value error, ", "Assertion failed, "):
            if message.startswith(lead):
                message = message[len(lead):]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        if message.startswith(("Input should be '", "Input should be a valid ")):
            message = "expected " + message[len("Input should be "):]
        elif message.startswith("Input "):
            message = message[len("Input "):]
        found = _LEADING_PATH.match(message)
        if found and " " not in found.group(1):
            inner = found.group(1)
            path = inner if inner.startswith(("criteria.", "scenario.", "trial.")) else (
                f"{path}.{inner}" if path else inner)
            message = found.group(2)
        message = message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message
        problems.setdefault(path, message)
    return list(problems.items())


# ---------------------------------------------------------------------------------------------
# Running


def is_simulator_url(url: str) -> bool:
    """True for loopback URLs (127.0.0.0/8, ::1, localhost): figures measured against a simulator."""
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_trial(trial: TrialFile, settings: Mapping[str, ConnectionSettings], *,
              factory: ConnectorFactory | None = None, results_dir: str | Path | None = None,
              run_id: str | None = None, progress: Progress | None = None,
              source: str | None = None) -> dict[str, Any]:
    """Run ``trial`` against the configured ``settings`` of its candidates; store and return the results."""
    missing = [c for c in trial.trial.candidates if c not in settings]
    if missing:
        raise TrialInvalid([("trial.candidates", f"{missing[0]!r} is not a configured connection "
                                                 f"(configured: {', '.join(sorted(settings)) or 'none'})")])
    build = factory or (lambda name, s: registry.get(s.platform)(s, name=name))
    run_id = run_id or new_run_id()
    master = trial.scenario.master_data.resolved(trial.scenario.seed)
    tag = "T" + re.sub(r"[^0-9A-Za-z]", "", run_id)[-6:].upper()
    plan = plan_movements(trial.scenario, master, tag=tag)
    started = datetime.now(timezone.utc)
    outcomes: dict[str, dict[str, Any]] = {}
    threads = []
    for name in trial.trial.candidates:
        def one(name: str = name) -> None:
            try:
                outcomes[name] = _run_system(name, settings[name], build, trial.scenario, master, plan, progress)
            except Exception as exc:  # one candidate failing must not lose the others' results
                outcomes[name] = _failed_system(name, settings[name], exc, len(plan))
        thread = threading.Thread(target=one, name=f"trial-{name}", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    results = {
        "format": RESULTS_FORMAT,
        "run_id": run_id,
        "trial_file": source,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trial": trial.model_dump(mode="json"),
        "plan": {"documents": len(plan), "tag": tag,
                 "by_process": dict(Counter(p.movement.kind.value for p in plan)),
                 "lines": sum(len(p.movement.lines) for p in plan),
                 "items": len(master.items), "warehouses": len(master.warehouses),
                 "delivery": "connector.push directly from a thread pool per candidate (not the outbox)"},
        "systems": {name: outcomes[name] for name in trial.trial.candidates},
    }
    directory = Path(results_dir or trial.trial.results_dir)
    save_results(results, directory)
    return results


def _run_system(name: str, settings: ConnectionSettings, build: ConnectorFactory, scenario: Scenario,
                master: MasterData, plan: list[PlannedMovement], progress: Progress | None) -> dict[str, Any]:
    skus = {i.sku for i in master.items}
    setup = build(name, settings)
    try:
        loaded = _load_master(setup, master)
        opening = _balances(setup, skus)
        declared = master.opening()
        opening_differs = sorted(k for k in set(opening) | set(declared)
                                 if opening.get(k, Decimal(0)) != declared.get(k, Decimal(0)))
        supported = setup.capabilities.movement_kinds
        drive = _drive(name, settings, build, scenario, plan, supported, progress)
        succeeded = [plan[i].movement for i in sorted(drive["succeeded"])]
        expected = apply_movements(opening, succeeded)
        ending = _balances(setup, skus)
        accuracy = _accuracy(expected, ending)
        setup_calls = _http_requests([setup])
    finally:
        setup.close()
    sent = drive["sent"]
    ok = len(drive["succeeded"])
    latencies: dict[str, list[float]] = drive["latencies"]
    every = [v for values in latencies.values() for v in values]
    calls = drive["calls"]
    return {
        "platform": settings.platform,
        "url": redact_text(settings.url),
        "against_simulator": is_simulator_url(settings.url),
        "master_data": loaded,
        "opening_positions": len(opening),
        "opening_differs_from_declared": [f"{s}@{w}" for s, w in opening_differs[:MAX_MISMATCHES_KEPT]],
        "opening_differs_count": len(opening_differs),
        "documents": {"planned": len(plan), "sent": sent, "succeeded": ok, "failed": sent - ok,
                      "not_sent": len(plan) - sent},
        "error_kinds": dict(Counter(e["kind"] for e in drive["errors"])),
        "errors": drive["errors"][:MAX_ERRORS_KEPT],
        "latency_ms": {kind: {"label": PROCESS_LABELS.get(kind, kind), "n": len(values),
                              "p50": percentile(values, 50), "p95": percentile(values, 95),
                              "samples": [round(v, 3) for v in values]}
                       for kind, values in sorted(latencies.items())},
        "drive_seconds": round(drive["seconds"], 4),
        "api_calls": {"drive": calls, "setup_and_reads": setup_calls},
        "accuracy": accuracy,
        "measures": {
            "success_rate": ok / sent if sent else None,
            "accuracy": accuracy["share"],
            "latency_p50_ms": percentile(every, 50),
            "latency_p95_ms": percentile(every, 95),
            "api_calls_per_document": (calls / sent) if sent and calls is not None else None,
            "throughput": (ok / drive["seconds"]) if drive["seconds"] > 0 else None,
        },
        "failure": None,
    }


def _failed_system(name: str, settings: ConnectionSettings, exc: Exception, planned: int) -> dict[str, Any]:
    kind = exc.kind if isinstance(exc, ConnectorError) else "bug"
    return {
        "platform": settings.platform, "url": redact_text(settings.url),
        "against_simulator": is_simulator_url(settings.url), "master_data": {},
        "documents": {"planned": planned, "sent": 0, "succeeded": 0, "failed": 0, "not_sent": planned},
        "error_kinds": {kind: 1}, "errors": [{"seq": None, "process": None, "kind": kind,
                                              "message": redact_text(f"{type(exc).__name__}: {exc}")[:500]}],
        "latency_ms": {}, "drive_seconds": 0.0, "api_calls": {"drive": None, "setup_and_reads": None},
        "accuracy": {"share": None, "positions": 0, "matching": 0, "mismatches": []},
        "measures": {k: None for k in ("success_rate", "accuracy", "latency_p50_ms", "latency_p95_ms",
                                       "api_calls_per_document", "throughput")},
        "failure": redact_text(f"{type(exc).__name__}: {exc}")[:500],
    }


def _load_master(connector: Connector, master: MasterData) -> dict[str, Any]:
    writable = connector.capabilities.writable
    out: dict[str, Any] = {}
    for entity, records in ((Entity.WAREHOUSES, master.canonical_warehouses()),
                            (Entity.ITEMS, master.canonical_items()),
                            (Entity.PARTNERS, master.canonical_partners())):
        if entity not in writable:
            out[entity.value] = {"how": "assumed seeded", "detail": f"the {connector.platform} connector cannot "
                                 f"write {entity.value}; the system must hold them already", "count": len(records)}
            continue
        created = unchanged = 0
        failed: list[str] = []
        for start in range(0, len(records), UPSERT_CHUNK):
            chunk = records[start:start + UPSERT_CHUNK]
            for record, result in zip(chunk, connector.upsert(entity, chunk)):
                if isinstance(result, ConnectorError):
                    failed.append(f"{getattr(record, 'label', record)}: {result}")
                elif result.created:
                    created += 1
                else:
                    unchanged += 1
        out[entity.value] = {"how": "upserted", "count": len(records), "created": created,
                             "updated_or_unchanged": unchanged, "failed": len(failed),
                             "failures": [redact_text(f)[:300] for f in failed[:20]]}
    return out


def _balances(connector: Connector, skus: set[str]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for page in connector.read_balances():
        for balance in page.records:
            if balance.sku in skus:
                out[(balance.sku, balance.warehouse)] += balance.on_hand
    return dict(out)


def _accuracy(expected: Mapping[tuple[str, str], Decimal],
              ending: Mapping[tuple[str, str], Decimal]) -> dict[str, Any]:
    positions = sorted(set(expected) | set(ending))
    mismatches = []
    for key in positions:
        want, have = expected.get(key, Decimal(0)), ending.get(key, Decimal(0))
        if want != have:
            mismatches.append({"sku": key[0], "warehouse": key[1], "expected": str(want), "actual": str(have)})
    matching = len(positions) - len(mismatches)
    return {"share": (matching / len(positions)) if positions else None, "positions": len(positions),
            "matching": matching, "mismatch_count": len(mismatches), "mismatches": mismatches[:MAX_MISMATCHES_KEPT]}


def _drive(name: str, settings: ConnectionSettings, build: ConnectorFactory, scenario: Scenario,
           plan: list[PlannedMovement], supported: frozenset[str], progress: Progress | None) -> dict[str, Any]:
    local = threading.local()
    built: list[Connector] = []
    lock = threading.Lock()
    succeeded: set[int] = set()
    errors: list[dict[str, Any]] = []
    latencies: dict[str, list[float]] = defaultdict(list)
    sent = 0
    done = 0
    started = time.perf_counter()
    deadline = started + scenario.duration_cap

    def connector() -> Connector:
        if not hasattr(local, "connector"):
            local.connector = build(name, settings)
            with lock:
                built.append(local.connector)
        return local.connector

    def one(index: int, planned: PlannedMovement) -> None:
        nonlocal sent, done
        movement = planned.movement
        kind = movement.kind.value
        if time.perf_counter() >= deadline:
            with lock:
                done += 1
            return
        with lock:
            sent += 1
        error: dict[str, Any] | None = None
        t0 = time.perf_counter()
        if kind not in supported:
            error = {"kind": "unsupported", "message": f"{settings.platform} does not support {kind}"}
        else:
            try:
                error = _push(connector(), movement, idempotency_key(movement.reference, name))
            except ConnectorError as exc:
                error = {"kind": exc.kind, "message": redact_text(str(exc))[:500]}
            except Exception as exc:  # a connector bug is a finding of the trial, not a crash of it
                error = {"kind": "bug", "message": redact_text(f"{type(exc).__name__}: {exc}")[:500]}
        elapsed = (time.perf_counter() - t0) * 1000
        with lock:
            if error is None:
                succeeded.add(index)
            else:
                errors.append({"seq": planned.seq, "process": kind, **error})
            if error is None or error["kind"] != "unsupported":
                latencies[kind].append(elapsed)
            done += 1
            count = done
        if progress is not None:
            progress(name, count, len(plan))

    try:
        with ThreadPoolExecutor(max_workers=scenario.concurrency, thread_name_prefix=f"trial-{name}") as pool:
            for future in [pool.submit(one, i, p) for i, p in enumerate(plan)]:
                future.result()
        seconds = time.perf_counter() - started
        calls = _http_requests(built)
    finally:
        for c in built:
            c.close()
    errors.sort(key=lambda e: e["seq"])
    return {"sent": sent, "succeeded": succeeded, "errors": errors, "latencies": dict(latencies),
            "seconds": seconds, "calls": calls}


def _push(connector: Connector, movement: Movement, key: str) -> dict[str, Any] | None:
    receipt = connector.push(movement, key)
    for _ in range(2):  # stock not posted yet: finish the same document's life cycle, as the engine does
        if receipt.posted:
            return None
        receipt = connector.push(movement, key)
    return None if receipt.posted else {"kind": "not_posted",
                                        "message": f"document {receipt.document_number or receipt.document_id} "
                                                   "was created but its stock is still not posted"}


def http_clients(connector: Connector) -> list[HttpClient]:
    """The HTTP clients a connector talks through (found on its attributes, two levels deep)."""
    found: list[HttpClient] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, HttpClient):
            found.append(obj)
            return
        if depth == 0 or not hasattr(obj, "__dict__"):
            return
        for value in vars(obj).values():
            if isinstance(value, HttpClient) or (hasattr(value, "__dict__") and not isinstance(value, type)):
                visit(value, depth - 1)

    visit(connector, 3)
    return found


def _http_requests(connectors: Iterable[Connector]) -> int | None:
    clients = [c for connector in connectors for c in http_clients(connector)]
    if not clients:
        return None
    return sum(c.stats.requests for c in clients)


def percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile (the same as NumPy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100
    low, high = math.floor(position), math.ceil(position)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return round(value, 3)


# ---------------------------------------------------------------------------------------------
# Storing and re-scoring


def save_results(results: Mapping[str, Any], results_dir: str | Path) -> Path:
    directory = Path(results_dir) / str(results["run_id"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def results_path(run: str | Path, results_dir: str | Path = DEFAULT_RESULTS_DIR) -> Path:
    """``run`` as a results file, a run directory, or a run id under ``results_dir``."""
    candidate = Path(run)
    for path in (candidate, candidate / RESULTS_FILE, Path(results_dir) / str(run) / RESULTS_FILE):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no stored trial run {str(run)!r} (looked for {candidate}, {candidate / RESULTS_FILE} "
                            f"and {Path(results_dir) / str(run) / RESULTS_FILE})")


def load_results(run: str | Path, results_dir: str | Path = DEFAULT_RESULTS_DIR) -> dict[str, Any]:
    path = results_path(run, results_dir)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a trial results file of format {RESULTS_FORMAT}")
    return data


def rescore(results: Mapping[str, Any], *, criteria: Criteria | None = None,
            weights: Mapping[str, float] | None = None) -> Scorecard:
    """The scorecard of stored ``results``: with their own criteria, or ``criteria`` (a changed trial
    file's), then ``weights`` (criterion key -> weight) on top. Reads nothing but ``results``."""
    if criteria is None:
        criteria = Criteria.model_validate(results["trial"]["criteria"])
    systems = list(results["systems"])
    platforms = {s: results["systems"][s]["platform"] for s in systems}
    chosen = effective_criteria(criteria, platforms, weights)
    measures = {s: results["systems"][s]["measures"] for s in systems}
    return score(systems, measures, chosen, missing=criteria.missing)
