"""``erphub demo``: the whole hub on one machine, against simulators, in under three minutes.

The command (``erphub/commands/demo.py``) starts the vendor simulators on loopback and hands
their URLs and logins to :func:`run_demo`, which talks to them only as a client would (the
connectors over real HTTP) and through their ``/_admin/`` routes (seed, faults, documents, calls).
It never imports the sandbox. The phases, each timed:

1. **simulators**: Kingdee is seeded with the apparel company (:mod:`erphub.demo_data`: items
   with sizes and colours, three warehouses, lot-managed fabrics, partners, opening stock); SAP B1
   has only its company, plus the partners (partner upsert is not in the connector contract).
2. **configuration**: ``DIR/erphub-demo.toml`` (connections ``kingdee`` and ``sap_b1``, secrets
   as ``{ env = ... }`` references set for this process only, the store ``DIR/erphub-demo.db``
   recreated each run, the in-process broker, a master-data and a movements flow), read back with
   :func:`erphub.config.load` like any configuration.
3. **migration** Kingdee → SAP B1 (:func:`sync.migrate.migrate`: warehouses, bin locations,
   items, opening balances, in batches, ending with its reconciliation). The Kingdee connector
   cannot list bin locations, so the migration takes the bins its balances name in the
   bin-managed warehouse (every bin of the demo company holds stock) and creates them in SAP B1.
4. **continuous sync**: a paced "business" (:mod:`erphub.demo_business`) posts the standard
   processes into Kingdee through the Kingdee connector while :meth:`sync.runner.Hub.run` pulls
   them and delivers them to SAP B1. Midway SAP B1 loses the answer of a few committed
   document POSTs (``drop_after_commit``); the engine settles each with ``find`` before sending
   again. Then the business stops and :meth:`Hub.once` settles what is left.
5. **reconciliation** of both systems' balances (:func:`compare.variance.reconcile_snapshots`).
6. **trial**: the same small scenario through every connector that exists (Kingdee, SAP B1 over
   the Service Layer and over the DI Server, Jiandaoyun's v5 Open API), each on a fresh simulator
   seeded with the trial's master data. Each document keeps each side in one warehouse
   (``one_warehouse_per_document``), as a Jiandaoyun 出入库单 with its header warehouse requires, so
   every candidate can post every document. Jiandaoyun's simulator enforces the vendor's rate limits
   (30 reads, 20 single writes, 10 batch writes a second per API key, 50 per company) and every
   Jiandaoyun connection throttles itself; the trial's workers each get their share of the
   connector's default budget (:func:`jiandaoyun_rate_limits`), so the demo's own concurrency
   never draws an 8303, and the trial report says so in its notes.
7. **index**: ``DIR/index.html`` and ``index.md`` link the reports with the headline figures;
   ``DIR/demo.json`` holds the same figures and checks for scripts.

:class:`DemoResult` ``.ok`` is true only when every check held: migration reconciled, every
business document delivered exactly once (``documents_for`` of every key on SAP B1, and of every
business key on Kingdee), the fault fired and was absorbed, zero variance after the sync
settled, every trial candidate ran, and no trial call was refused for the demo's own rate (nor a
master-data write of the trial failed).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

SIMULATOR_NOTE = ("Every figure here was measured against simulators of the vendors' APIs running on this machine "
                  "(erphub's sandbox), not against real Kingdee, SAP Business One or Jiandaoyun systems.")
KINGDEE_SECRET_ENV = "ERPHUB_DEMO_KINGDEE_APP_SECRET"
SAP_PASSWORD_ENV = "ERPHUB_DEMO_SAP_B1_PASSWORD"
JIANDAOYUN_KEY_ENV = "ERPHUB_DEMO_JIANDAOYUN_API_KEY"
DB_NAME = "erphub-demo.db"
CONFIG_NAME = "erphub-demo.toml"
SOURCE, TARGET = "kingdee", "sap_b1"
CONNECTOR_LABELS = {"webapi": "Kingdee WebAPI", "service_layer": "SAP B1 Service Layer",
                    "di_server": "SAP B1 DI Server", "v5": "Jiandaoyun v5 Open API"}
#: worker threads per trial candidate (each with its own connector, as ``compare.trial`` drives)
TRIAL_CONCURRENCY = 2
#: connections a trial opens per candidate: one for master data and stock reads, one per worker
TRIAL_CONNECTIONS = TRIAL_CONCURRENCY + 1
#: The fault injected midway: SAP B1 commits these document POSTs and then loses the answer.
FAULT_PLAN = {"seed": 7, "drop_after_commit": [{"method": "POST", "path": "/b1s/*", "max_count": 3}]}
PHASES = (
    ("simulators", "start the simulators and seed Kingdee with the apparel company"),
    ("configuration", "build the configuration"),
    ("migration", "migrate Kingdee → SAP B1"),
    ("sync", "continuous sync Kingdee → SAP B1, with one injected fault"),
    ("reconcile", "reconcile Kingdee vs SAP B1"),
    ("trial", "trial over every connector"),
    ("index", "write the index"),
)


# --- what the command hands over --------------------------------------------------------------


@dataclass(frozen=True)
class KingdeeLogin:
    acct_id: str
    username: str
    app_id: str
    app_secret: str


@dataclass(frozen=True)
class SapLogin:
    company_db: str
    username: str
    password: str


@dataclass(frozen=True)
class DemoSandbox:
    """Root URLs (``http://127.0.0.1:PORT``) of the running simulators and the logins they accept.
    ``trial`` maps a trial connection name to ``(platform, transport, root url)``, one fresh
    simulator per candidate; ``jiandaoyun_api_key`` is the key the Jiandaoyun trial simulator accepts."""

    kingdee: str
    sap_b1: str
    kingdee_login: KingdeeLogin
    sap_login: SapLogin
    trial: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)
    jiandaoyun_api_key: str = ""


@dataclass(frozen=True)
class DemoOptions:
    output: Path = Path("erphub-report")
    skus: int = 2000
    sync_seconds: float = 100.0  # "a few minutes" of sync, while the whole demo stays under 3 minutes
    documents_per_second: float = 3.0
    trial_documents: int = 36
    fault_at: float = 0.4  # share of the sync phase after which the fault is injected
    seed: int = 2026

    @classmethod
    def quick(cls, output: Path, skus: int) -> DemoOptions:
        return cls(output=output, skus=skus, sync_seconds=10.0, documents_per_second=4.0, trial_documents=12,
                   fault_at=0.3)


@dataclass
class DemoResult:
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (check, passed, detail)
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    @property
    def failed(self) -> list[str]:
        return [f"{name}: {detail}" for name, passed, detail in self.checks if not passed]

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, bool(passed), detail))


class DemoFailed(Exception):
    """A phase could not go on; the message says which and why."""


# --- the simulators' admin routes -------------------------------------------------------------


class Admin:
    """A simulator's ``/_admin/`` routes, over HTTP."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.http = requests.Session()

    def _json(self, method: str, route: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, f"{self.root}/_admin/{route}", timeout=120, **kwargs)
        if answer.status_code >= 300:
            raise DemoFailed(f"{self.root}/_admin/{route} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def seed(self, data: Mapping[str, Any]) -> None:
        self._json("POST", "seed", json=data)

    def set_faults(self, plan: Mapping[str, Any]) -> None:
        self._json("POST", "faults", json=plan)

    def faults_fired(self) -> dict[str, int]:
        return dict(self._json("GET", "faults")["fired"])

    def documents(self, reference: str) -> list[str]:
        return list(self._json("GET", "documents", params={"reference": reference})["documents"])

    def calls(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._json("GET", "calls", params=filters)["calls"])

    def close(self) -> None:
        self.http.close()


# --- the run ----------------------------------------------------------------------------------


class _Phases:
    def __init__(self, console: Console, result: DemoResult) -> None:
        self.console, self.result = console, result

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        number = next(i for i, (k, _) in enumerate(PHASES, 1) if k == key)
        title = dict(PHASES)[key]
        self.console.rule(f"[bold]{number}/{len(PHASES)}[/] {title}", align="left")
        started = time.perf_counter()
        try:
            yield
        except (DemoFailed, KeyboardInterrupt):
            raise
        except Exception as exc:  # say which phase stopped, and why, without a traceback
            from connectors.redaction import redact_text

            raise DemoFailed(redact_text(f"phase {number} ({title}) stopped: {type(exc).__name__}: {exc}")) from exc
        finally:
            self.result.timings[key] = time.perf_counter() - started
        self.console.print(f"[green]✓[/] {title} [dim]({self.result.timings[key]:.1f} s)[/]", highlight=False)


def run_demo(sandbox: DemoSandbox, options: DemoOptions, console: Console | None = None) -> DemoResult:
    """Run every phase against ``sandbox``; the result (also written to ``DIR/demo.json``)."""
    console = console or Console()
    out_dir = options.output.resolve()
    result = DemoResult()
    phase = _Phases(console, result)
    started = time.perf_counter()
    console.print(f"[bold yellow]{SIMULATOR_NOTE}[/]", highlight=False)
    kd_admin, sap_admin = Admin(sandbox.kingdee), Admin(sandbox.sap_b1)
    try:
        with phase("simulators"):
            company = _seed(kd_admin, sap_admin, sandbox, options, console, result)
        with phase("configuration"):
            settings = _configure(out_dir, sandbox, console)
        from sync.connections import Connections
        from sync.store import Store

        store = Store.open(settings.store.url)
        try:
            store.upgrade()
            with Connections(store, settings.connections) as connections:
                with phase("migration"):
                    _migrate(store, connections, settings, out_dir, console, result)
                with phase("sync"):
                    _sync(store, connections, settings, company, kd_admin, sap_admin, options, console, result)
                with phase("reconcile"):
                    _reconcile(store, connections, settings, out_dir, console, result)
        finally:
            store.close()
        with phase("trial"):
            _trial(sandbox, options, out_dir, console, result)
        with phase("index"):
            result.timings["total"] = time.perf_counter() - started
            write_index(result, out_dir)
    finally:
        kd_admin.close()
        sap_admin.close()
    result.timings["total"] = time.perf_counter() - started
    (out_dir / "demo.json").write_text(json.dumps(_summary_json(result, out_dir), indent=2, ensure_ascii=False,
                                                  default=str) + "\n", encoding="utf-8")
    _print_summary(result, out_dir, console)
    return result


# --- 1. simulators ----------------------------------------------------------------------------


def _seed(kd: Admin, sap: Admin, sandbox: DemoSandbox, options: DemoOptions, console: Console,
          result: DemoResult) -> Any:
    from erphub.demo_data import apparel_company

    company = apparel_company(options.skus, seed=options.seed)
    kd.seed(company.seed())
    # SAP B1 starts with its company only; partner upsert is not in the connector contract
    sap.seed({"world": {"partners": company.partners}})
    lots = sum(1 for b in company.balances if b["lot"])
    result.figures.update(skus=len(company.items), lot_managed=len(company.lot_managed),
                          warehouses=len(company.warehouses), partners=len(company.partners),
                          opening_positions=len(company.balances))
    table = Table("simulator", "url", "holds", title="simulators on loopback", title_justify="left")
    table.add_row("Kingdee K3Cloud", f"{sandbox.kingdee}/k3cloud/",
                  f"{len(company.items):,} items ({len(company.lot_managed)} lot-managed fabrics), "
                  f"{len(company.warehouses)} warehouses, {len(company.partners)} partners, "
                  f"{len(company.balances):,} opening positions ({lots} lots)")
    table.add_row("SAP Business One", f"{sandbox.sap_b1}/b1s/v2/", f"company {sandbox.sap_login.company_db}: "
                  f"{len(company.partners)} partners, nothing else yet")
    for name, (platform, transport, url) in sandbox.trial.items():
        table.add_row(f"trial: {name}", url, f"{platform} ({transport}); seeded by the trial")
    console.print(table)
    return company


# --- 2. configuration -------------------------------------------------------------------------


def jiandaoyun_rate_limits(connections: int) -> dict[str, float]:
    """Client-side calls per second for each of ``connections`` Jiandaoyun connections that share one
    API key at the same time: the connector's default budget (below the vendor's 30/20/10 and 50 a
    second) split evenly (rounded down to a tenth), so together they stay below the vendor's limits."""
    from connectors.jiandaoyun.settings import RateLimits

    return {kind: math.floor(value / connections * 10) / 10 for kind, value in RateLimits().model_dump().items()}


def _connections_toml(names: Mapping[str, tuple[str, str, str]], sandbox: DemoSandbox) -> str:
    kd, sap = sandbox.kingdee_login, sandbox.sap_login
    blocks = []
    for name, (platform, transport, url) in names.items():
        if platform == "jiandaoyun":
            limits = ", ".join(f"{kind} = {value:g}" for kind, value in
                               jiandaoyun_rate_limits(TRIAL_CONNECTIONS).items())
            blocks.append(f'[connections.{name}]\nplatform = "jiandaoyun"\nurl = "{url}/api"\n'
                          f'api_key = {{ env = "{JIANDAOYUN_KEY_ENV}" }}\nrate_limits = {{ {limits} }}\n')
        elif platform == "kingdee":
            blocks.append(f'[connections.{name}]\nplatform = "kingdee"\nurl = "{url}/k3cloud/"\n'
                          f'acct_id = "{kd.acct_id}"\nusername = "{kd.username}"\napp_id = "{kd.app_id}"\n'
                          f'app_secret = {{ env = "{KINGDEE_SECRET_ENV}" }}\n')
        else:
            blocks.append(f'[connections.{name}]\nplatform = "sap_b1"\nurl = "{url}"\n'
                          f'transport = "{transport}"\ncompany_db = "{sap.company_db}"\n'
                          f'username = "{sap.username}"\npassword = {{ env = "{SAP_PASSWORD_ENV}" }}\n'
                          'spec_field = "User_Text"\n')
    return "\n".join(blocks)


def _load(path: Path, text: str) -> Any:
    from erphub.config import ConfigInvalid, load

    path.write_text(text, encoding="utf-8")
    try:
        return load(path)
    except ConfigInvalid as exc:
        raise DemoFailed(f"the demo's own configuration {path} is invalid:\n{exc}") from None


def _configure(out_dir: Path, sandbox: DemoSandbox, console: Console) -> Any:
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / DB_NAME
    for stale in (db, db.with_name(DB_NAME + "-wal"), db.with_name(DB_NAME + "-shm")):
        stale.unlink(missing_ok=True)
    # secrets are references; the values live in this process's environment only
    os.environ[KINGDEE_SECRET_ENV] = sandbox.kingdee_login.app_secret
    os.environ[SAP_PASSWORD_ENV] = sandbox.sap_login.password
    os.environ[JIANDAOYUN_KEY_ENV] = sandbox.jiandaoyun_api_key
    text = (
        "# Written by `erphub demo` for this run; the simulators it points at stop when the demo ends.\n"
        f'[store]\nurl = "sqlite:///{db.as_posix()}"\n\n[broker]\nurl = "memory://"\n\n'
        + _connections_toml({SOURCE: ("kingdee", "webapi", sandbox.kingdee),
                             TARGET: ("sap_b1", "service_layer", sandbox.sap_b1)}, sandbox)
        + f'\n[[flows]]\nname = "master-data"\nkind = "master_data"\nsource = "{SOURCE}"\n'
        f'targets = ["{TARGET}"]\nevery = "1m"\n'
        f'\n[[flows]]\nname = "movements"\nkind = "movements"\nsource = "{SOURCE}"\n'
        f'targets = ["{TARGET}"]\nevery = "2s"\n'
    )
    settings = _load(out_dir / CONFIG_NAME, text)
    from erphub.config import redacted_view

    view = redacted_view(settings)
    table = Table("what", "where", title="configuration", title_justify="left")
    table.add_row("configuration", str(out_dir / CONFIG_NAME))
    table.add_row("store (recreated each run)", view["store"]["url"])
    table.add_row("broker", view["broker"]["url"] + " (in-process workers)")
    for name, conn in view["connections"].items():
        secret = conn.get("app_secret") or conn.get("password")
        table.add_row(f"connection {name}", f"{conn['platform']} at {conn['url']} (secret from {secret})")
    for flow in settings.flows:
        table.add_row(f"flow {flow.name}", f"{flow.kind.value}: {flow.source} → {', '.join(flow.targets)} "
                                           f"every {flow.every.total_seconds():g} s")
    console.print(table)
    return settings


# --- 3. migration -----------------------------------------------------------------------------


def _migrate(store: Any, connections: Any, settings: Any, out_dir: Path, console: Console,
             result: DemoResult) -> None:
    from erphub.commands.migrate import _Bars, write_report
    from sync.migrate import MigrateOptions, migrate
    from sync.migrate_workspace import Workspace

    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console)
    bars = _Bars(progress, False)

    directory = out_dir / "migration"
    directory.mkdir(exist_ok=True)
    with Workspace() as ws:
        with progress:
            migration = migrate(store, connections, MigrateOptions(source=SOURCE, target=TARGET, deliver_timeout=120),
                                on_progress=bars, rules=settings.codemap, workspace=ws)
        md = write_report(directory / "migration.md", migration, ws)
        js = write_report(directory / "migration.json", migration, ws)
    result.reports.update(migration=md[0], migration_json=js[0])
    phases = migration.phases
    rec = migration.reconciliation
    result.figures.update(
        migration_run=migration.run_id,
        items_migrated=phases["items"].written + phases["items"].unchanged,
        warehouses_migrated=phases["warehouses"].written + phases["warehouses"].unchanged,
        bins_migrated=phases["locations"].written + phases["locations"].unchanged,
        opening_lines=phases["balances"].written, opening_documents=phases["balances"].movements,
        migration_seconds=round(migration.seconds, 2),
        migration_matched_positions=rec.balances.matched if rec is not None and rec.balances else 0,
    )
    console.print(f"migrated {result.figures['items_migrated']:,} items, {result.figures['warehouses_migrated']} "
                  f"warehouses, {result.figures['bins_migrated']} bin locations and "
                  f"{result.figures['opening_lines']:,} opening-balance lines in "
                  f"{result.figures['opening_documents']} documents; reconciliation: "
                  f"{'MATCH' if rec is not None and rec.ok else 'DIFFERENT'}"
                  + (f" ({rec.balances.matched:,} positions)" if rec is not None and rec.balances else ""),
                  highlight=False)
    result.check("migration", migration.ok,
                 f"{migration.errors} problem(s), {migration.outstanding} document(s) not delivered, reconciliation "
                 f"{'matches' if rec is not None and rec.ok else 'differs'}")


# --- 4. continuous sync -----------------------------------------------------------------------


def _sync(store: Any, connections: Any, settings: Any, company: Any, kd: Admin, sap: Admin, options: DemoOptions,
          console: Console, result: DemoResult) -> None:
    from erphub.demo_business import Business, plan_documents
    from sync.broker import BrokerConfig
    from sync.push import idempotency_key
    from sync.retry import RetryPolicy
    from sync.runner import Hub

    count = int(options.sync_seconds * options.documents_per_second) + 1
    documents = plan_documents(company, count, seed=options.seed)
    business = Business(lambda: connections.connector(SOURCE), documents, per_second=options.documents_per_second,
                        key_of=lambda m: idempotency_key(m.reference, SOURCE))
    # Retry waits compressed to the demo's time scale (the defaults are 15 s backoff, 30 s before find)
    policy = RetryPolicy(initial=1.0, reconcile_delay=2.0, defer_initial=2.0, lease_seconds=60.0)
    fault_at = options.sync_seconds * options.fault_at
    state = {"fault": False}
    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<14}"), BarColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console)
    task = progress.add_task("syncing", total=options.sync_seconds, detail="")
    began = time.monotonic()

    def on_progress(summaries: list[Any]) -> None:
        elapsed = time.monotonic() - began
        if not state["fault"] and elapsed >= fault_at:
            sap.set_faults(FAULT_PLAN)
            state["fault"] = True
            progress.console.print(f"[bold red]fault injected[/] at {elapsed:.0f} s: SAP B1 commits the next "
                                   f"{FAULT_PLAN['drop_after_commit'][0]['max_count']} document POSTs and loses "
                                   "their answers", highlight=False)
        movements = next((s for s in summaries if s.name == "movements"), None)
        detail = f"business posted {len(business.result.posted)} into Kingdee"
        if movements is not None:
            detail += (f" · hub: {movements.enqueued} enqueued, {movements.delivered} delivered to SAP B1, "
                       f"{movements.failed} retrying, {movements.dead} dead")
        progress.update(task, completed=min(elapsed, options.sync_seconds), detail=detail)

    with Hub(store, connections, settings.flows, BrokerConfig("memory://"), policy=policy, threads=4) as hub:
        with progress:
            business.start()
            try:
                hub.run(for_seconds=options.sync_seconds, on_progress=on_progress)
            finally:
                business.stop()
                business.join()
        console.print(f"business stopped after {len(business.result.posted)} documents; settling: pull what is "
                      "left and deliver until the outbox is empty", highlight=False)
        settled = time.perf_counter()
        try:
            leftover = _settle(hub, store, connections, timeout=120.0)
        except TimeoutError as exc:
            leftover = -1
            result.check("sync settled", False, str(exc))
        result.figures["settle_seconds"] = round(time.perf_counter() - settled, 2)
    dropped = sum(sap.faults_fired().values())  # read before the plan is cleared (clearing resets the counts)
    sap.set_faults({})
    _count_sync(store, connections, business, kd, sap, dropped, leftover, result, console)


def _settle(hub: Any, store: Any, connections: Any, *, timeout: float) -> int:
    """Pull what is left and deliver until no row toward SAP B1 is pending, sending or ambiguous
    (``Hub.once`` returns when only future retries remain: a lost answer waits for its ``find``).
    The rows still in flight at ``timeout``."""
    from sqlalchemy import func, select

    from sync.store import Outbox, OutboxStatus

    deadline = time.monotonic() + timeout
    hub.once(timeout=timeout)
    target_id = connections.id(TARGET)
    while True:
        with store.session() as session:
            waiting = int(session.scalar(select(func.count()).select_from(Outbox).where(
                Outbox.target_connection_id == target_id,
                Outbox.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS)))) or 0)
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(0.25)
        hub.drain([TARGET], timeout=max(1.0, deadline - time.monotonic()))


def _count_sync(store: Any, connections: Any, business: Any, kd: Admin, sap: Admin, dropped: int, leftover: int,
                result: DemoResult, console: Console) -> None:
    from sqlalchemy import select

    from sync.store import ErrorQueue, ErrorStatus, Movement, Outbox, OutboxStatus

    source_id, target_id = connections.id(SOURCE), connections.id(TARGET)
    with store.session() as session:
        rows = session.execute(
            select(Movement.reference, Movement.source_connection_id, Outbox.idempotency_key, Outbox.status,
                   Outbox.attempts, Outbox.last_error_kind)
            .join(Outbox, Outbox.movement_id == Movement.id)
            .where(Outbox.target_connection_id == target_id)).all()
        dead_letters = session.scalar(select(ErrorQueue.id).where(ErrorQueue.status == ErrorStatus.OPEN).limit(1))
    posted = {ref for ref, _ in business.result.posted}
    sent = [r for r in rows if r.source_connection_id == source_id and r.reference in posted
            and r.status == OutboxStatus.SENT]
    absorbed = [r for r in rows if r.status == OutboxStatus.SENT and (r.attempts > 1 or r.last_error_kind)]
    # exactly one SAP B1 document per delivered key (migration documents included), one Kingdee
    # document per business key
    sap_counts = Counter(len(sap.documents(r.idempotency_key)) for r in rows if r.status == OutboxStatus.SENT)
    kd_counts = Counter(len(kd.documents(key)) for _, key in business.result.posted)
    duplicates = sum(n - 1 for n, c in sap_counts.items() if n > 1 for _ in range(c))
    duplicates_kd = sum(n - 1 for n, c in kd_counts.items() if n > 1 for _ in range(c))
    delivered = {r.reference for r in sent}
    result.figures.update(
        business_documents=len(business.result.posted), business_refused=len(business.result.failed),
        business_by_kind=dict(business.result.by_kind), movements_synced=len(delivered & posted),
        sap_documents_checked=sum(sap_counts.values()), duplicates=duplicates + duplicates_kd,
        faults_injected=dropped, faults_absorbed=len(absorbed), outstanding=max(leftover, 0),
        absorbed_by=dict(Counter(r.last_error_kind or "retry" for r in absorbed)),
    )
    table = Table("figure", "value", title="continuous sync", title_justify="left")
    table.columns[1].justify = "right"
    for label, value in (("documents posted in Kingdee by the business", len(business.result.posted)),
                         ("… of which refused by Kingdee", len(business.result.failed)),
                         ("movements delivered to SAP B1", len(delivered & posted)),
                         ("answers lost after commit (injected)", dropped),
                         ("deliveries that absorbed a fault (find before resend / retry)", len(absorbed)),
                         ("SAP B1 documents checked by reference", sum(sap_counts.values())),
                         ("duplicates", duplicates + duplicates_kd),
                         ("still outstanding", max(leftover, 0))):
        table.add_row(label, f"{value:,}")
    console.print(table)
    for by, n in sorted(Counter(business.result.by_kind).items()):
        console.print(f"  {by}: {n}", highlight=False)
    result.check("business documents accepted by Kingdee", not business.result.failed,
                 "; ".join(business.result.failed[:3]) or f"{len(business.result.posted)} posted")
    result.check("every business document delivered to SAP B1", posted <= delivered and leftover == 0,
                 f"{len(posted - delivered)} not delivered, {max(leftover, 0)} outstanding")
    result.check("no duplicates", duplicates + duplicates_kd == 0 and set(sap_counts) <= {1} and set(kd_counts) <= {1},
                 f"{sum(sap_counts.values())} SAP B1 keys and {sum(kd_counts.values())} Kingdee keys checked; "
                 f"documents per key: SAP B1 {dict(sap_counts)}, Kingdee {dict(kd_counts)}")
    result.check("fault injected and absorbed", dropped > 0 and len(absorbed) >= dropped,
                 f"{dropped} answer(s) lost, {len(absorbed)} delivery(ies) settled them")
    result.check("nothing dead-lettered", dead_letters is None, "open error-queue entries: see `erphub errors list`"
                 if dead_letters is not None else "error queue empty")


# --- 5. reconciliation ------------------------------------------------------------------------


def _reconcile(store: Any, connections: Any, settings: Any, out_dir: Path, console: Console,
               result: DemoResult) -> None:
    from compare.reconcile_report import write_reconcile_report
    from compare.snapshots import snapshot_systems
    from compare.variance import VarianceClass, reconcile_snapshots

    ids = snapshot_systems(store, connections, [SOURCE, TARGET], rules=settings.codemap)
    rec = reconcile_snapshots(store, ids)
    written = write_reconcile_report(rec, out_dir / "reconcile", simulators=(SOURCE, TARGET))
    result.reports.update(reconcile=written["html"], reconcile_md=written["markdown"], reconcile_json=written["json"])
    in_flight = rec.counts.get(VarianceClass.IN_FLIGHT, 0)
    result.figures.update(match_rate=rec.match_rate, reconciled_rows=rec.total_rows, variance_rows=rec.errors,
                          in_flight_rows=in_flight, value_at_stake=str(rec.value_at_stake))
    console.print(f"账实相符率 match rate {rec.match_rate:.2%} ({rec.matched:,} of {rec.total_rows:,} item-warehouse "
                  f"rows), {in_flight} in flight, {rec.errors} differing", highlight=False)
    result.check("zero variance after the sync settled", rec.errors == 0 and in_flight == 0,
                 f"match rate {rec.match_rate:.2%}, {rec.errors} differing row(s), {in_flight} in flight")


# --- 6. trial ---------------------------------------------------------------------------------


def _trial(sandbox: DemoSandbox, options: DemoOptions, out_dir: Path, console: Console, result: DemoResult) -> None:
    from compare.report import write_trial_report
    from compare.trial import parse_trial, rescore, run_trial

    if not sandbox.trial:
        result.check("trial", False, "no trial simulators were started")
        return
    directory = out_dir / "trial"
    directory.mkdir(exist_ok=True)
    settings = _load(directory / "erphub-trial.toml", "# Written by `erphub demo`: one fresh simulator per "
                     "trial candidate.\n" + _connections_toml(sandbox.trial, sandbox))
    trial = parse_trial({
        "trial": {"name": "erphub demo: the same scenario on every connector", "candidates": list(sandbox.trial),
                  "results_dir": str(directory / "runs")},
        "scenario": {"seed": options.seed, "movements": options.trial_documents,
                     "concurrency": TRIAL_CONCURRENCY, "one_warehouse_per_document": True,
                     "master_data": {"generate": {"items": 40, "warehouses": 2}}},
    })
    world = trial.scenario.master_data.resolved(trial.scenario.seed).to_world_dict()
    for name, (_, _, url) in sandbox.trial.items():
        admin = Admin(url)
        try:
            admin.seed({"world": world})
        finally:
            admin.close()
    chosen = {name: settings.connections[name] for name in sandbox.trial}
    results = run_trial(trial, chosen, results_dir=directory / "runs", source="erphub demo")
    card = rescore(results)
    card.notes.extend(_trial_notes(sandbox, trial, results))
    written = write_trial_report(results, card, directory)
    result.reports.update(trial=written["html"], trial_md=written["markdown"], trial_json=written["json"])
    table = Table("rank", "candidate", "connector", "sent", "ok", "p95 ms", "calls/doc", "total",
                  title=f"trial {results['run_id']} (simulators)", title_justify="left")
    ranking = []
    for s in card.systems:
        info = results["systems"][s.system]
        platform, transport, _ = sandbox.trial[s.system]
        d, m = info["documents"], info["measures"]
        label = CONNECTOR_LABELS.get(transport, f"{platform} ({transport})")
        table.add_row(str(s.rank), s.system, label, str(d["sent"]), str(d["succeeded"]),
                      "—" if m.get("latency_p95_ms") is None else f"{m['latency_p95_ms']:.1f}",
                      "—" if m.get("api_calls_per_document") is None else f"{m['api_calls_per_document']:.2f}",
                      "—" if s.total is None else f"{s.total:.2f}")
        ranking.append({"rank": s.rank, "system": s.system, "connector": label,
                        "total": s.total, "succeeded": d["succeeded"], "sent": d["sent"]})
    console.print(table)
    failures = {name: info["failure"] for name, info in results["systems"].items() if info.get("failure")}
    result.figures.update(trial_run=results["run_id"], trial_ranking=ranking,
                          trial_documents=sum(info["documents"]["sent"] for info in results["systems"].values()))
    result.check("trial ran on every connector", not failures,
                 "; ".join(f"{n}: {f}" for n, f in failures.items()) or f"{len(results['systems'])} candidates")
    # the demo's own concurrency must not exceed a vendor's rate limit (Jiandaoyun: 8303)
    limited = {name: (info["error_kinds"].get("rate_limited", 0),
                      sum(e.get("failed", 0) for e in info["master_data"].values()))
               for name, info in results["systems"].items()}
    result.check("trial: no call refused for rate, master data written", not any(sum(v) for v in limited.values()),
                 ", ".join(f"{n}: {r} document(s) rate-limited, {f} master-data write(s) failed"
                           for n, (r, f) in limited.items() if r or f)
                 or "no rate-limit refusal, no failed master-data write")


def _trial_notes(sandbox: DemoSandbox, trial: Any, results: Mapping[str, Any]) -> list[str]:
    """What the committee must know to read the figures of Jiandaoyun, which runs under rate limits and
    holds one warehouse per document side: the same documents went to every candidate."""
    from compare.scenario import plan_movements

    plan = plan_movements(trial.scenario, trial.scenario.master_data.resolved(trial.scenario.seed),
                          tag=results["plan"]["tag"])
    spread = sum(1 for p in plan if any(len({w for w in side if w}) > 1 for side in (
        [ln.from_warehouse for ln in p.movement.lines], [ln.to_warehouse for ln in p.movement.lines])))
    limits = jiandaoyun_rate_limits(TRIAL_CONNECTIONS)
    notes = []
    for name, (platform, _, _) in sandbox.trial.items():
        info = results["systems"].get(name)
        if platform != "jiandaoyun" or info is None:
            continue
        d, calls = info["documents"], info["api_calls"]["drive"]
        notes.append(
            f"{name}: Jiandaoyun allows 30 reads, 20 single writes and 10 batch writes a second per API key and 50 "
            "a second per company, and its simulator enforces them (error 8303). The connector throttles itself "
            f"below them; the trial opens {TRIAL_CONNECTIONS} connections on the one key ({TRIAL_CONCURRENCY} "
            f"workers and one for master data and stock reads), so each was given 1/{TRIAL_CONNECTIONS} of the "
            f"connector's default budget: {limits['read']:g} reads, {limits['write']:g} single writes and "
            f"{limits['company']:g} calls a second. Its latency and throughput include the connector's waits for "
            "that budget (a push is a lookup of the key, then one create); the other simulators enforce no rate "
            "limit. It was sent the same documents as every other candidate.")
        if spread:
            created = f"{calls / d['succeeded']:.2f}" if calls is not None and d["succeeded"] else "—"
            notes.append(
                f"{name}: {spread} of the {len(plan)} documents have lines in several warehouses on one side. The "
                "reference app's 出入库单 holds one warehouse per side (仓库编码; 调出/调入 for transfers), so the "
                "connector refuses them without a lookup or a write (kind 'rejected'; a Jiandaoyun tenant keys one "
                f"document per warehouse); {d['failed']} document(s) failed in all. Refused documents count in its "
                "success rate and, taking about 0 ms and no call, in its latency percentiles and in API calls per "
                f"document (calls / documents sent): per document it created, the drive made {created} calls.")
    return notes


# --- 7. index ---------------------------------------------------------------------------------

_INDEX_TEMPLATE = """{% extends "document.html" %}
{% block content %}
<section id="reports"><h2>Reports</h2><ul class="notes">
{% for label, href, note in links %}<li><a href="{{ href }}">{{ label }}</a>{% if note %} — {{ note }}{% endif %}</li>
{% endfor %}</ul></section>
{{ super() }}
{% endblock %}
"""


def _links(result: DemoResult, out_dir: Path) -> list[tuple[str, str, str]]:
    entries = (("migration", "Migration Kingdee → SAP B1", "phases, reconciliation and every problem"),
               ("migration_json", "Migration (JSON)", "the same figures for scripts"),
               ("reconcile", "Reconciliation Kingdee vs SAP B1", "match rate, classes, drill-down"),
               ("reconcile_md", "Reconciliation (Markdown)", ""), ("reconcile_json", "Reconciliation (JSON)", ""),
               ("trial", "Trial over every connector", "ranking, scorecard and charts"),
               ("trial_md", "Trial (Markdown)", ""), ("trial_json", "Trial (JSON)", ""))
    return [(label, result.reports[key].relative_to(out_dir).as_posix(), note)
            for key, label, note in entries if key in result.reports]


def index_document(result: DemoResult) -> Any:
    from compare.report import Document, Section, Table as DocTable, Text

    f = result.figures
    ranking = ", ".join(f"{r['rank']}. {r['connector']}" + (f" {r['total']:.2f}" if r["total"] is not None else "")
                        for r in f.get("trial_ranking", []))
    headline = [
        ["items migrated", f"{f.get('items_migrated', 0):,}",
         f"{f.get('skus', 0):,} SKUs in sizes and colours, {f.get('lot_managed', 0)} lot-managed fabrics"],
        ["warehouses migrated", f"{f.get('warehouses_migrated', 0)}", f"{f.get('bins_migrated', 0)} bin locations migrated"],
        ["opening-balance lines", f"{f.get('opening_lines', 0):,}", f"in {f.get('opening_documents', 0)} documents"],
        ["movements synced", f"{f.get('movements_synced', 0):,}",
         f"of {f.get('business_documents', 0):,} documents posted in Kingdee during the sync"],
        ["faults absorbed", f"{f.get('faults_absorbed', 0)}",
         f"{f.get('faults_injected', 0)} answers lost after commit on SAP B1; duplicates: {f.get('duplicates', 0)}"],
        ["match rate 账实相符率", f"{f.get('match_rate', 0):.2%}" if "match_rate" in f else "—",
         f"{f.get('reconciled_rows', 0):,} item-warehouse rows, {f.get('variance_rows', 0)} differing"],
        ["trial ranking", ranking or "—", f"{f.get('trial_documents', 0)} documents over every connector"],
    ]
    doc = Document(
        title="erphub demo: an apparel company moves from Kingdee to SAP Business One",
        subtitle=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {result.timings.get('total', 0):.0f} s",
        banner=SIMULATOR_NOTE, meta=[("result", "every check passed" if result.ok else "CHECKS FAILED")],
        footer="erphub demo · every figure measured against simulators on loopback",
    )
    doc.sections.append(Section("Headline figures", [DocTable(["figure", "value", "detail"], headline,
                                                              numeric_columns=frozenset({1}), id="headline")],
                                id="figures"))
    doc.sections.append(Section("Checks", [DocTable(["check", "result", "detail"],
                                                    [[n, "pass" if p else "FAIL", d] for n, p, d in result.checks],
                                                    id="checks")], id="checks-section"))
    timings = [[key, title, f"{result.timings[key]:.1f}"] for key, title in PHASES if key in result.timings]
    if "total" in result.timings:
        timings.append(["total", "", f"{result.timings['total']:.1f}"])
    doc.sections.append(Section("Phase timings", [DocTable(["phase", "what", "seconds"], timings,
                                                           numeric_columns=frozenset({2}), id="timings")]))
    doc.sections.append(Section("How it was run", [Text(
        "Kingdee and SAP B1 simulators, and one fresh simulator per trial candidate (Jiandaoyun's among them), "
        "were started on loopback; Kingdee was seeded with the company; the migration wrote warehouses, items "
        "(in batches) and opening balances to SAP B1; a paced business posted the standard processes into Kingdee "
        "while the hub pulled them and delivered them to SAP B1; midway SAP B1 lost the answers of a few committed "
        "document POSTs; the balances of both systems were then reconciled, and a short trial drove the same "
        "scenario through every connector (Kingdee, SAP B1 over the Service Layer and the DI Server, Jiandaoyun), "
        "each on its simulator seeded with the trial's master data, every document with one warehouse per side "
        "(as Jiandaoyun's movement form holds them). Jiandaoyun's simulator enforces the vendor's "
        "rate limits, and its connections were throttled to stay below them (see the trial report's notes).")]))
    return doc


def write_index(result: DemoResult, out_dir: Path) -> dict[str, Path]:
    """``index.html`` and ``index.md`` in ``out_dir``: the headline figures and links to the reports."""
    from compare.report import GENERATOR, environment, render_markdown

    doc = index_document(result)
    links = _links(result, out_dir)
    html = environment().from_string(_INDEX_TEMPLATE).render(doc=doc, generator=GENERATOR, lang="en", links=links)
    paths = {"html": out_dir / "index.html", "markdown": out_dir / "index.md"}
    paths["html"].write_text(html, encoding="utf-8")
    reports = "\n".join(["## Reports", ""] + [f"- [{label}]({href})" + (f" — {note}" if note else "")
                                               for label, href, note in links])
    head, _, sections = render_markdown(doc).partition("\n## ")  # the reports go before the first section
    paths["markdown"].write_text(f"{head}\n{reports}\n\n## {sections}", encoding="utf-8")
    result.reports.update(index=paths["html"], index_md=paths["markdown"])
    return paths


def _summary_json(result: DemoResult, out_dir: Path) -> dict[str, Any]:
    return {"format": "erphub-demo/1", "ok": result.ok, "note": SIMULATOR_NOTE, "figures": result.figures,
            "checks": [{"check": n, "passed": p, "detail": d} for n, p, d in result.checks],
            "timings": {k: round(v, 2) for k, v in result.timings.items()},
            "reports": {k: p.relative_to(out_dir).as_posix() for k, p in result.reports.items()}}


def _print_summary(result: DemoResult, out_dir: Path, console: Console) -> None:
    table = Table("phase", "seconds", title="phase timings", title_justify="left")
    table.columns[1].justify = "right"
    for key, _ in PHASES:
        if key in result.timings:
            table.add_row(key, f"{result.timings[key]:.1f}")
    table.add_row("total", f"{result.timings.get('total', 0):.1f}")
    console.print(table)
    for name, passed, detail in result.checks:
        console.print(f"{'[green]pass[/]' if passed else '[bold red]FAIL[/]'} {name}: {detail}", highlight=False)
    console.print(f"[bold yellow]{SIMULATOR_NOTE}[/]", highlight=False)
    console.print(f"report: {out_dir / 'index.html'}", highlight=False, soft_wrap=True)


__all__ = ["Admin", "DemoFailed", "DemoOptions", "DemoResult", "DemoSandbox", "KingdeeLogin", "SIMULATOR_NOTE",
           "SapLogin", "index_document", "run_demo", "write_index"]
