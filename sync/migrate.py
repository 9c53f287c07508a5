"""Migration: items, warehouses, bin locations and opening balances from one system into another
(DESIGN.md §1, §5).

``migrate(store, connections, MigrateOptions(source="kd", target="sap"))`` runs the phases in order,
each streaming page by page (memory stays flat however large the source):

1. **warehouses**, **locations**, then **items**: a page is read from the source
   (``connector.read``), each code is translated source → canonical → target through
   :mod:`sync.codemap`, and the records are written through the shared
   :class:`sync.master_writer.MasterWriter` (``target.upsert`` in batches of ``batch`` or the
   target's ``capabilities.max_batch``, under the retry policy, a batch refused as a whole tried
   record by record). Upsert is idempotent by nature: a page written twice (after a crash)
   creates nothing twice. Each written item and warehouse is bound in the target's ``id_map``. A
   target that cannot write warehouses must hold them already; the migration checks that instead.
   Bin locations (``WH/BIN``, the warehouse code translated, the bin code as it is) come from
   ``read(Entity.LOCATIONS)`` where the source has it, else from the bins its balances name in
   its bin-managed warehouses. A target that cannot write them is checked instead: a bin it does
   not hold is an error, and the stock on it is left out of the documents and reported; a target
   that cannot list them either gets a warning per bin (the stock is sent as it is).
2. **balances**: ``read_balances(warehouse=...)`` for each of the source's warehouses, page by
   page, becomes opening stock in the target: the lines of a page (in chunks of
   ``lines_per_movement``) make one count-gain movement (or a misc receipt when the target lacks
   count gains) with the deterministic reference
   ``MIG-<run>-<warehouse>-<n>``, enqueued with :func:`sync.push.enqueue_many` *in the same
   transaction as the page's checkpoint* (so idempotency keys, find-before-resend, ordering and
   the error queue all apply, and a page is never enqueued twice).
3. **deliver**: the run's outbox rows are delivered through :func:`sync.delivery.deliver_due`
   until none is outstanding (rejections are dead-lettered by delivery, as always).
4. **reconcile**: fresh balance snapshots of both sides (:func:`sync.pull.pull_balances`, codes
   translated to canonical ones) and the item, warehouse and bin code sets of both sides are
   compared exactly: matched / missing / different (see :mod:`sync.migrate_reconcile`).

Checkpoints: one ``sync_run`` row (mode ``migrate``, entity ``migration``, connection = the target)
holds the whole plan and position as JSON in ``resume_token``: the phase, the source's resume
token after the last committed page, per-warehouse movement numbers and the counts. Every page
commits its checkpoint with a compare-and-set on the previous one, so two processes resuming the
same run cannot both commit a page. ``resume_run=N`` continues from the last committed page; the
plan (source, target, entities, batch, document date) comes from the run, not from the caller.

Bad records never stop a run: each is recorded as a :class:`~sync.migrate_workspace.Problem` (for
the report) and, on a real run, in the error queue (source mapping problems on the source
connection, upsert refusals on the target, kind ``mapping``/``rejected``); the rest migrates. A
balance of an item, warehouse or bin that failed (an open error-queue entry) is left out of its movement
and reported, so one bad item does not sink a whole document.

``dry_run=True`` reads the source (and, read-only, the target's items, warehouses and bins), maps and
validates everything and records what would fail, writing nothing to the target, the outbox,
the id map or the error queue.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import canonical
from canonical import MovementKind, RecordInvalid, StockBalance
from connectors.base import Connector, Entity, Page, Receipt
from connectors.errors import ConfigError, ConnectorError
from connectors.redaction import redact_text
from sync import codemap, delivery
from sync.connections import Connections
from sync.idmap import Binding, bind_many
from sync.master_writer import MasterWriter, record_refusal, record_written
from sync.migrate_reconcile import Reconciliation, reconcile
from sync.migrate_workspace import Problem, Workspace
from sync.pull_errors import dead_letter
from sync.push import enqueue_many
from sync.retry import RetryPolicy
from sync.store import (
    ErrorQueue,
    ErrorStatus,
    IdMap,
    Movement,
    Outbox,
    OutboxStatus,
    RunStatus,
    Store,
    SyncMode,
    SyncRun,
    utcnow,
)

__all__ = ["ENTITIES", "MigrateOptions", "MigrationResult", "PhaseCounts", "Problem", "default_report_path", "load_state",
           "migrate", "run_reference"]

log = logging.getLogger("erphub.sync.migrate")

ENTITIES = ("warehouses", "locations", "items", "balances")
RUN_ENTITY = "migration"
DEFAULT_LINES = 100
#: Leases of the migration's own deliveries; a resumed run waits at most this long for the rows a
#: killed process had in flight (they are then reconciled with ``find`` before anything is resent).
DEFAULT_LEASE_SECONDS = 60.0
_RESUMABLE = (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED)
_IN_FLIGHT = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS)
_MASTER = {"warehouses": (Entity.WAREHOUSES, "code"), "items": (Entity.ITEMS, "sku")}


@dataclass(frozen=True)
class MigrateOptions:
    source: str | None = None
    target: str | None = None
    entities: tuple[str, ...] = ENTITIES
    dry_run: bool = False
    resume_run: int | None = None
    batch: int | None = None              # records per upsert call (default: the target's max_batch)
    page_size: int | None = None          # records per source read (default: the connection's)
    lines_per_movement: int = DEFAULT_LINES
    document_date: date | None = None     # of the opening-balance documents (default: today)
    new: bool = False                     # start a new run although an earlier one is unfinished or
                                          # already posted the opening balances
    deliver_timeout: float = 600.0        # seconds the deliver phase waits for retries to come due
    reconcile: bool = True


@dataclass
class PhaseCounts:
    """Per phase: ``read`` records from the source; ``written`` created or changed in the target
    (balances: lines enqueued; deliver: documents delivered); ``unchanged`` already there as they
    are (balances: zero lines skipped); ``failed`` problems (dry run: would fail); ``movements``
    documents enqueued (deliver: still outstanding); ``pages`` read."""

    read: int = 0
    written: int = 0
    unchanged: int = 0
    failed: int = 0
    movements: int = 0
    pages: int = 0
    done: bool = False


@dataclass
class MigrationResult:
    run_id: int
    source: str
    target: str
    dry_run: bool
    resumed: bool
    entities: tuple[str, ...]
    phases: dict[str, PhaseCounts]
    errors: int = 0        # problems found by this process (error severity)
    warnings: int = 0
    outstanding: int = 0   # balance documents not delivered when the run ended
    reconciliation: Reconciliation | None = None
    status: str = RunStatus.RUNNING
    capability_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing failed, nothing left undelivered, and the target matches the source."""
        if self.capability_problems or self.errors or self.outstanding:
            return False
        return self.reconciliation is None or self.reconciliation.ok


Progress = Callable[[str, PhaseCounts], None]


def run_reference(run_id: int, warehouse: str, n: int) -> str:
    """The reference of the ``n``-th opening-balance document of ``warehouse`` in run ``run_id``."""
    return f"MIG-{run_id}-{warehouse}-{n}"


# --- entry point --------------------------------------------------------------------------------


def migrate(store: Store, connections: Connections, options: MigrateOptions, *,
            policy: RetryPolicy | None = None, on_progress: Progress | None = None,
            rules: codemap.CodeMapRules | None = None, workspace: Workspace | None = None,
            sleep: Callable[[float], None] = time.sleep) -> MigrationResult:
    """Run (or resume) a migration; see the module documentation.

    ``workspace`` (optional) receives the problems and is left open for the caller to write a
    report from; otherwise a private one is used and closed. Raises ``ConfigError`` for an
    impossible plan (unknown connection, a target that can write none of the entities) before
    anything is written, and whatever the connectors raise for the run as a whole (after
    recording the run ``interrupted``/``failed`` with its checkpoint kept for ``resume_run``).
    """
    own = workspace is None
    ws = workspace or Workspace()
    try:
        return _Migration(store, connections, options, policy, on_progress, rules, ws, sleep).run()
    finally:
        if own:
            ws.close()


# --- the run ------------------------------------------------------------------------------------


class _Migration:
    def __init__(self, store: Store, connections: Connections, options: MigrateOptions,
                 policy: RetryPolicy | None, on_progress: Progress | None, rules: codemap.CodeMapRules | None,
                 ws: Workspace, sleep: Callable[[float], None]) -> None:
        self.store, self.connections, self.ws, self.rules, self.sleep = store, connections, ws, rules, sleep
        self.policy = policy or RetryPolicy(lease_seconds=DEFAULT_LEASE_SECONDS)
        self.on_progress = on_progress or (lambda phase, counts: None)
        self.options = options
        self.state: dict[str, Any] = {}
        self.token_text: str | None = None
        self.run_id = 0
        self.started = time.monotonic()
        self._pending: list[tuple[Problem, int, Any, str]] = []
        self._dry_warehouses: set[str] | None = None  # target codes a dry run knows will exist
        self._dry_missing_bins: set[str] = set()  # canonical "WH/BIN" a dry run knows will be missing

    # -- plan and run row ------------------------------------------------------------------------

    def run(self) -> MigrationResult:
        resumed = self._open()
        self.source: Connector = self.connections.connector(self.state["source"])
        self.target: Connector = self.connections.connector(self.state["target"])
        self.source_id = self.connections.id(self.state["source"])
        self.target_id = self.connections.id(self.state["target"])
        entities = tuple(self.state["entities"])
        counts = {name: PhaseCounts(**self.state["counts"].get(name, {})) for name in self._phases()}
        self.counts = counts
        result = MigrationResult(run_id=self.run_id, source=self.state["source"], target=self.state["target"],
                                 dry_run=self.dry_run, resumed=resumed, entities=entities, phases=counts)
        result.capability_problems = self._check_capabilities()
        if result.capability_problems and not self.dry_run:
            self._close_run(RunStatus.FAILED, "; ".join(result.capability_problems))
            raise ConfigError("cannot migrate: " + "; ".join(result.capability_problems))
        for problem in result.capability_problems:
            self.ws.add(Problem("plan", "*", "*", problem, field="capabilities"))
        log.info("migration %d %s: %s → %s (%s)", self.run_id, "resumed" if resumed else "started",
                 result.source, result.target, ", ".join(entities))
        try:
            for phase in self._phases():
                if phase in self.state["done"]:
                    counts[phase].done = True
                    self.on_progress(phase, counts[phase])
                    continue
                getattr(self, f"_phase_{phase}")(counts[phase])
                counts[phase].done = True
                self.on_progress(phase, counts[phase])
                self._checkpoint(phase_done=phase)
            if "deliver" in counts:
                result.outstanding = counts["deliver"].movements
            if not self.dry_run and self.options.reconcile:
                result.reconciliation = reconcile(self.store, self.connections, self.state["source"],
                                                  self.state["target"], entities, self.ws, rules=self.rules,
                                                  on_progress=self.on_progress)
        except BaseException as exc:
            status = RunStatus.INTERRUPTED if isinstance(exc, (KeyboardInterrupt, SystemExit)) else RunStatus.FAILED
            self._close_run(status, redact_text(f"{type(exc).__name__}: {exc}")[:4000])
            if not self.dry_run:
                exc.add_note(f"migration run {self.run_id} is {status.value}; `erphub migrate --resume {self.run_id}` "
                             "continues from its last committed page")
            raise
        result.errors, result.warnings = self.ws.errors, self.ws.warnings
        result.seconds = time.monotonic() - self.started
        result.status = RunStatus.SUCCEEDED if (self.dry_run or result.outstanding == 0) else RunStatus.FAILED
        self._close_run(result.status, None if result.status == RunStatus.SUCCEEDED else
                        f"{result.outstanding} opening-balance document(s) not delivered yet")
        return result

    @property
    def dry_run(self) -> bool:
        return bool(self.state.get("dry_run"))

    def _phases(self) -> list[str]:
        entities = self.state["entities"]
        phases = [e for e in ENTITIES if e in entities]
        if "balances" in entities and not self.dry_run:
            phases.append("deliver")
        return phases

    def _open(self) -> bool:
        o = self.options
        unknown = sorted(set(o.entities) - set(ENTITIES))
        if unknown:
            raise ValueError(f"cannot migrate {', '.join(unknown)} (entities: {', '.join(ENTITIES)})")
        if o.batch is not None and o.batch < 1 or o.lines_per_movement < 1:
            raise ValueError("batch and lines_per_movement must be at least 1")
        target_id = self.connections.id(o.target) if o.target and o.resume_run is None else None
        if o.source and o.resume_run is None:
            self.connections.platform(o.source)  # ConfigError naming the configured ones
        with self.store.session(write=True) as session:
            if o.resume_run is not None:
                run = session.get(SyncRun, o.resume_run)
                if run is None or run.mode != SyncMode.MIGRATE:
                    raise ConfigError(f"run {o.resume_run} is not a migration run")
                if run.dry_run:
                    raise ConfigError(f"run {o.resume_run} was a dry run; there is nothing to resume")
                if run.status == RunStatus.SUCCEEDED:
                    raise ConfigError(f"migration run {o.resume_run} has already succeeded; nothing to resume")
                state = json.loads(run.resume_token or "{}")
                for name, given in (("source", o.source), ("target", o.target)):
                    if given is not None and given != state.get(name):
                        raise ConfigError(f"run {o.resume_run} migrates {state.get('source')} → {state.get('target')}, "
                                          f"not {o.source} → {o.target}")
                run.status, run.error, run.finished_at = RunStatus.RUNNING, None, None
                self.run_id, self.state, self.token_text = run.id, state, run.resume_token
                return True
            if not o.source or not o.target:
                raise ConfigError("a migration needs a source and a target connection")
            if o.source == o.target:
                raise ConfigError("source and target must be different connections")
            if not o.dry_run and not o.new:
                for earlier in session.scalars(select(SyncRun).where(
                        SyncRun.mode == SyncMode.MIGRATE, SyncRun.connection_id == target_id,
                        SyncRun.dry_run.is_(False), SyncRun.status.in_(_RESUMABLE))):
                    state = json.loads(earlier.resume_token or "{}")
                    if state.get("source") == o.source:
                        raise ConfigError(f"migration run {earlier.id} ({o.source} → {o.target}) is {earlier.status}: "
                                          f"resume it with --resume {earlier.id} (a new run would post its opening "
                                          "balances again), or pass --new to start over anyway")
                if "balances" in o.entities:
                    # Opening balances are count-gain documents with run-scoped references: a second
                    # successful run would post them again and double the target's stock.
                    for earlier in session.scalars(select(SyncRun).where(
                            SyncRun.mode == SyncMode.MIGRATE, SyncRun.connection_id == target_id,
                            SyncRun.dry_run.is_(False), SyncRun.status == RunStatus.SUCCEEDED)):
                        state = json.loads(earlier.resume_token or "{}")
                        if state.get("source") == o.source and "balances" in state.get("entities", ()):
                            raise ConfigError(
                                f"migration run {earlier.id} ({o.source} → {o.target}) already posted the opening "
                                "balances; a new run would post them again. Migrate items and warehouses only "
                                "(--entities items,warehouses), reconcile with `erphub reconcile`, or pass --new "
                                "if the target was reset")
            self.state = {
                "v": 1, "source": o.source, "target": o.target, "entities": [e for e in ENTITIES if e in o.entities],
                "dry_run": o.dry_run, "batch": o.batch, "page_size": o.page_size, "lines": o.lines_per_movement,
                "date": (o.document_date or date.today()).isoformat(), "phase": None, "token": None,
                "done": [], "counts": {}, "seq": {},
            }
            self.token_text = json.dumps(self.state, sort_keys=True)
            run = SyncRun(connection_id=target_id, entity=RUN_ENTITY, mode=SyncMode.MIGRATE, status=RunStatus.RUNNING,
                          dry_run=o.dry_run, started_at=utcnow(), resume_token=self.token_text)
            session.add(run)
            session.flush()
            self.run_id = run.id
            return False

    def _check_capabilities(self) -> list[str]:
        problems = []
        src, tgt = self.source.capabilities, self.target.capabilities
        for entity in ("warehouses", "items"):
            if entity not in self.state["entities"]:
                continue
            if Entity(entity) not in src.entities:
                problems.append(f"{self.state['source']} cannot read {entity}")
            if entity == "items" and Entity.ITEMS not in tgt.writable:
                problems.append(f"{self.state['target']} cannot write items (capabilities.writable)")
        if "balances" in self.state["entities"]:
            if not src.balances:
                problems.append(f"{self.state['source']} cannot read balances")
            if self._opening_kind() is None:
                problems.append(f"{self.state['target']} takes neither count-gain nor misc-receipt documents")
        return problems

    def _opening_kind(self) -> MovementKind | None:
        kinds = self.target.capabilities.movement_kinds
        for kind in (MovementKind.count_gain, MovementKind.misc_receipt):
            if kind.value in kinds:
                return kind
        return None

    def _checkpoint(self, session: Session | None = None, *, phase_done: str | None = None) -> None:
        """Commit the state (in ``session``'s transaction when given) with a compare-and-set."""
        state = self.state
        state["counts"] = {name: {k: v for k, v in asdict(c).items() if k != "done"} for name, c in self.counts.items()}
        if phase_done is not None:
            state["done"] = [*state["done"], phase_done] if phase_done not in state["done"] else state["done"]
            state["phase"], state["token"] = None, None
        text = json.dumps(state, sort_keys=True)
        totals = {"read_count": sum(c.read for c in self.counts.values()),
                  "written_count": sum(c.written for c in self.counts.values()),
                  "failed_count": sum(c.failed for c in self.counts.values())}

        def write(s: Session) -> None:
            claimed = s.execute(update(SyncRun).where(SyncRun.id == self.run_id, SyncRun.status == RunStatus.RUNNING,
                                                      SyncRun.resume_token == self.token_text)
                                .values(resume_token=text, updated_at=utcnow(), **totals)
                                .execution_options(synchronize_session=False))
            if claimed.rowcount != 1:
                raise RuntimeError(f"migration run {self.run_id}: another process moved its checkpoint first")

        if session is not None:
            write(session)
        else:
            with self.store.session(write=True) as s:
                write(s)
        self.token_text = text

    def _close_run(self, status: RunStatus, error: str | None) -> None:
        try:
            with self.store.session(write=True) as session:
                session.execute(update(SyncRun).where(SyncRun.id == self.run_id)
                                .values(status=status, error=error, updated_at=utcnow(),
                                        finished_at=utcnow() if status == RunStatus.SUCCEEDED else None)
                                .execution_options(synchronize_session=False))
        except Exception:  # the original failure matters more than the bookkeeping
            log.exception("could not record migration run %d as %s", self.run_id, status)

    # -- reading -----------------------------------------------------------------------------------

    def _pages(self, phase: str, read: Callable[..., Iterator[Page[Any]]], **kwargs: Any) -> Iterator[Page[Any]]:
        """The source's pages of ``phase``, from the committed resume token when there is one."""
        token = self.state["token"] if self.state.get("phase") == phase else None
        if self.state.get("phase") != phase:
            self.state["phase"], self.state["token"] = phase, None
        size = self.state.get("page_size")
        pages = read(resume=token, page_size=size, **kwargs) if token else read(page_size=size, **kwargs)
        with closing(pages) if hasattr(pages, "close") else _nothing():
            yield from pages

    def _report(self, problem: Problem, *, connection_id: int, raw: Any = None,
                error: ConnectorError | None = None) -> None:
        """A problem for the report, and on a real run for the error queue (written with the
        page's checkpoint by :meth:`_flush`): a refusal by the target (``error``) as the shared
        writer records one, anything else as a mapping problem."""
        self.ws.add(problem)
        if not self.dry_run:
            self._pending.append((problem, connection_id, raw, error))

    def _flush(self, session: Session) -> None:
        pending, self._pending = self._pending, []
        note = f"migration run {self.run_id}: "
        for problem, connection_id, raw, error in pending:
            if error is not None:
                record_refusal(session, connection_id=connection_id, entity=problem.entity,
                               record_key=problem.record, error=error, raw=raw, note=note)
            else:
                dead_letter(session, connection_id=connection_id, entity=problem.entity, record_key=problem.record,
                            field=problem.field, raw=raw, vendor_code=problem.vendor_code,
                            message=note + problem.message)

    # -- master data -------------------------------------------------------------------------------

    def _phase_warehouses(self, counts: PhaseCounts) -> None:
        self._master("warehouses", counts)

    def _phase_locations(self, counts: PhaseCounts) -> None:
        """Bin locations, after the warehouses (a bin needs its warehouse) and before the balances
        (a document names its bins): read from the source when it reads ``Entity.LOCATIONS``, else
        the bins its balances name in its bin-managed warehouses. Written where the target can
        write them; otherwise checked against the target's own (missing: an error, and the stock
        on them is left out of the documents), or, when the target cannot list them either,
        reported as a warning each (their stock is sent as it is)."""
        writable = Entity.LOCATIONS in self.target.capabilities.writable
        existing: set[tuple[str, str]] | None = None
        if (self.dry_run or not writable) and Entity.LOCATIONS in self.target.capabilities.entities:
            existing = {(b.warehouse, b.code) for page in self.target.read(Entity.LOCATIONS) for b in page.records}
        self._read_locations(counts, writable, existing)
        if counts.read and not writable:
            self.ws.add(Problem("locations", "locations", "*", f"{self.state['target']} cannot write bin locations "
                                "(capabilities.writable): the source's bins were "
                                + ("checked against its own" if existing is not None else "not copied and cannot be "
                                   "checked there"), field="capabilities", severity="warning"))

    def _read_locations(self, counts: PhaseCounts, writable: bool, existing: set[tuple[str, str]] | None) -> None:
        if Entity.LOCATIONS in self.source.capabilities.entities:
            for page in self._pages("locations", lambda **kw: self.source.read(Entity.LOCATIONS, **kw)):
                self._locations(page.records, page.errors, page.resume, counts, writable, existing)
                if page.resume is None:
                    break
            return
        if not self.source.capabilities.balances:
            log.info("migration %d: %s reads neither bin locations nor balances; no bins to migrate", self.run_id,
                     self.state["source"])
            return
        for warehouse in self._source_warehouses(bin_managed=True):
            if warehouse in self.state.setdefault("loc_wh_done", []):
                continue
            for page in self._pages(f"locations:{warehouse}", self.source.read_balances, warehouse=warehouse):
                bins = []
                for key in self.ws.first_seen("locations", (f"{b.warehouse}/{b.bin}" for b in page.records if b.bin)):
                    wh, _, code = key.partition("/")
                    try:
                        bins.append(canonical.Location(warehouse=wh, code=code))
                    except (RecordInvalid, ValidationError, ValueError) as exc:
                        self._report(Problem("locations", "locations", key, _message(exc),
                                             field=_field_of(exc) or "bin"), connection_id=self.source_id)
                        counts.failed += 1
                self._locations(bins, (), page.resume, counts, writable, existing)
                if page.resume is None:
                    break
            self.state["loc_wh_done"].append(warehouse)
            if not self.dry_run:
                self._checkpoint()

    def _locations(self, records: Sequence[canonical.Location], errors: Sequence[Any], resume: str | None,
                   counts: PhaseCounts, writable: bool, existing: set[tuple[str, str]] | None) -> None:
        """One page of source bins: translate the warehouse codes, write or check, commit the page."""
        first = counts.read + 1
        counts.read += len(records) + len(errors)
        target = self.state["target"]
        for n, error in enumerate(errors):
            self._report(Problem("locations", "locations", error.record_key, f"cannot read it: {error.message}",
                                 field=error.field, position=first + len(records) + n),
                         connection_id=self.source_id, raw=error.raw)
            counts.failed += 1
        ready: list[tuple[int, str, Any]] = []  # (position, canonical "WH/BIN", bin in the target's codes)
        with self.store.session() as session:
            whs = codemap.to_canonicals(session, self.source_id, "warehouses", {b.warehouse for b in records},
                                        rules=self.rules)
            to_target = self._to_target(session, "warehouses", [c for c in whs.values() if c])
        for n, location in enumerate(records):
            position, wh = first + n, whs.get(location.warehouse)
            key = f"{wh or location.warehouse}/{location.code}"
            target_wh = to_target.get(wh) if wh else None
            if target_wh is None:
                self._report(Problem("locations", "locations", key, f"the code map has no code for warehouse "
                                     f"{location.warehouse!r}", field="warehouse", position=position),
                             connection_id=self.source_id, raw=location.model_dump(mode="json"))
                counts.failed += 1
                self._dry_missing_bins.add(key)
                continue
            mapped = location if target_wh == location.warehouse else location.replace(warehouse=target_wh)
            if writable and not self.dry_run:
                ready.append((position, key, mapped))
            elif existing is not None and (mapped.warehouse, mapped.code) in existing:
                counts.unchanged += 1
            elif writable:
                counts.written += 1  # would be created
            elif existing is not None:
                self._report(Problem("locations", "locations", key,
                                     f"bin {mapped.code!r} of warehouse {mapped.warehouse!r} does not exist in {target}, "
                                     "which cannot create bin locations; create it there first (the stock on it is "
                                     "left out of the opening balances until then)", field="code", position=position),
                             connection_id=self.target_id, raw=mapped.model_dump(mode="json"))
                counts.failed += 1
                self._dry_missing_bins.add(key)
            else:
                self.ws.add(Problem("locations", "locations", key,
                                    f"{target} can neither create nor list bin locations: bin {mapped.code!r} of "
                                    f"warehouse {mapped.warehouse!r} must exist there already (the stock on it is "
                                    "sent as it is)", field="code", position=position, severity="warning"))
        written = self._write("locations", Entity.LOCATIONS, ready, counts) if ready else []
        counts.pages += 1
        if not self.dry_run:
            with self.store.session(write=True) as session:
                self._flush(session)
                self._bind(session, "locations", written)
                self.state["token"] = resume
                self._checkpoint(session)
        self.on_progress("locations", counts)

    def _phase_items(self, counts: PhaseCounts) -> None:
        if self.dry_run:
            self._index_target_items()
        self._master("items", counts)

    def _master(self, phase: str, counts: PhaseCounts) -> None:
        entity, key_field = _MASTER[phase]
        writable = entity in self.target.capabilities.writable
        existing: set[str] | None = None
        if phase == "warehouses" and (self.dry_run or not writable):
            existing = {w.code for page in self.target.read(Entity.WAREHOUSES) for w in page.records}
        for page in self._pages(phase, lambda **kw: self.source.read(entity, **kw)):
            with self.store.session() as session:
                ready = self._master_page(session, phase, key_field, page, counts, writable, existing)
            written = self._write(phase, entity, ready, counts) if ready else []
            counts.pages += 1
            if not self.dry_run:
                with self.store.session(write=True) as session:
                    self._flush(session)
                    self._bind(session, phase, written)
                    self.state["token"] = page.resume
                    self._checkpoint(session)
            self.on_progress(phase, counts)
            if page.resume is None:
                break
        if phase == "warehouses" and self.dry_run:
            self._dry_warehouses = (existing or set()) | self.__dict__.pop("_would_create", set())

    def _master_page(self, session: Session, phase: str, key_field: str, page: Page[Any], counts: PhaseCounts,
                     writable: bool, existing: set[str] | None) -> list[tuple[int, str, Any]]:
        """Translate and check one page; the records ready to write (position, canonical code,
        record in the target's codes). Problems are reported on the way."""
        first = counts.read + 1
        counts.read += len(page.records) + len(page.errors)
        for n, error in enumerate(page.errors):
            self._report(Problem(phase, phase, error.record_key, f"cannot read it: {error.message}",
                                          field=error.field, position=first + len(page.records) + n),
                         connection_id=self.source_id, raw=error.raw)
            counts.failed += 1
        # translate codes source → canonical → target
        codes = [getattr(r, key_field) for r in page.records]
        to_canonical = codemap.to_canonicals(session, self.source_id, phase, codes, rules=self.rules)
        canonical_codes = [c for c in (to_canonical.get(code) for code in codes) if c is not None]
        to_target = self._to_target(session, phase, canonical_codes)
        in_target = self.ws.items("tgt", canonical_codes) if self.dry_run and phase == "items" else {}
        ready: list[tuple[int, str, Any]] = []  # (position, canonical code, record in target codes)
        index: list[tuple[str, str, bool]] = []
        for n, record in enumerate(page.records):
            position, code = first + n, getattr(record, key_field)
            canonical_code = to_canonical.get(code)
            if canonical_code is None:
                self._report(Problem(phase, phase, code, f"the code map has no canonical code for {code!r}",
                                              field=key_field, position=position),
                             connection_id=self.source_id, raw=record.model_dump(mode="json"))
                counts.failed += 1
                continue
            target_code = to_target.get(canonical_code)
            try:
                if target_code is None:
                    raise _FieldError(key_field, f"the code map has no {self.state['target']} code for "
                                                 f"{canonical_code!r}")
                mapped = record if target_code == code else record.replace(**{key_field: target_code})
                problem = self._validate(phase, canonical_code, mapped, in_target)
                if problem is not None:
                    raise problem
            except (_FieldError, RecordInvalid, ValidationError, ValueError) as exc:
                field_ = _field_of(exc) or key_field
                self._report(Problem(phase, phase, canonical_code, _message(exc), field=field_,
                                              position=position),
                             connection_id=self.source_id, raw=record.model_dump(mode="json"))
                counts.failed += 1
                index.append((canonical_code, getattr(record, "base_unit", ""), False))
                continue
            index.append((canonical_code, getattr(record, "base_unit", ""), True))
            ready.append((position, canonical_code, mapped))
        if phase == "items" and self.dry_run:
            self.ws.add_items("src", index)
        if phase == "warehouses" and (self.dry_run or not writable):
            assert existing is not None
            would_create = self.__dict__.setdefault("_would_create", set())
            for position, canonical_code, mapped in ready:
                if mapped.code in existing:
                    counts.unchanged += 1
                elif writable:
                    counts.written += 1  # would be created
                    would_create.add(mapped.code)
                else:
                    self._report(Problem(phase, phase, canonical_code,
                                                  f"warehouse {mapped.code!r} does not exist in "
                                                  f"{self.state['target']}, which cannot create warehouses; "
                                                  "create it there first", field="code", position=position),
                                 connection_id=self.target_id, raw=mapped.model_dump(mode="json"))
                    counts.failed += 1
            return []
        if self.dry_run:
            counts.written += len(ready)  # would be written (created or updated)
            return []
        return ready

    def _validate(self, phase: str, canonical_code: str, mapped: Any,
                  in_target: dict[str, tuple[str, bool]]) -> _FieldError | None:
        """Dry-run checks beyond canonical validation (the connector already validated)."""
        if not self.dry_run or phase != "items":
            return None
        known = in_target.get(canonical_code)
        if known is not None and known[0] and known[0] != mapped.base_unit:
            return _FieldError("base_unit", f"{self.state['target']} keeps {mapped.sku!r} in {known[0]}, the source in "
                                            f"{mapped.base_unit}; unit conversion is out of scope: map the unit first")
        if known is None and self.ws.target_items() and not self._target_knows(mapped.base_unit):
            self.ws.add(Problem(phase, phase, mapped.sku, f"no {self.state['target']} item uses unit "
                                f"{mapped.base_unit!r}; the target may not know it", field="base_unit",
                                severity="warning"))
        return None

    def _target_knows(self, unit: str) -> bool:
        cache = self.__dict__.setdefault("_units_seen", {})
        if unit not in cache:
            cache[unit] = self.ws.target_uses_unit(unit)
        return cache[unit]

    def _index_target_items(self) -> None:
        """Dry run: the target's items (read-only) under canonical codes, to compare units."""
        for page in self.target.read(Entity.ITEMS):
            with self.store.session() as session:
                codes = codemap.to_canonicals(session, self.target_id, "items", [i.sku for i in page.records],
                                              rules=self.rules)
            self.ws.add_items("tgt", [(codes.get(i.sku) or i.sku, i.base_unit, True) for i in page.records])
            if page.resume is None:
                break

    def _to_target(self, session: Session, entity: str, canonical_codes: Sequence[str]) -> dict[str, str | None]:
        """canonical → target code for a page (code map: table, then rules, then identity)."""
        found: dict[str, str | None] = {}
        unique = list(dict.fromkeys(canonical_codes))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            for row in session.execute(select(IdMap.canonical_id, IdMap.external_code, IdMap.external_id).where(
                    IdMap.connection_id == self.target_id, IdMap.entity == entity, IdMap.canonical_id.in_(chunk))):
                found[row.canonical_id] = row.external_code or row.external_id
        # no table row: the configured rules, then identity (as codemap.to_external, a page at a time)
        configured = self.rules if self.rules is not None else codemap._configured
        chain = configured.rules_for(self.state["target"], entity) if configured.root else None
        for code in unique:
            if code not in found:
                found[code] = codemap.apply_rules(chain, code) if chain else code
        return found

    def _write(self, phase: str, entity: Entity, ready: list[tuple[int, str, Any]],
               counts: PhaseCounts) -> list[tuple[str, str]]:
        """Upsert ``ready`` through the shared writer; (canonical, target code) of the records now in
        the target. A refused record is reported (error queue on the target); an error that stops
        the target is raised (the page's checkpoint is not committed: resume sends it again)."""
        writer = MasterWriter(self.target, entity, policy=self.policy, batch=self.state.get("batch"),
                              what=f"upsert {entity.value} into {self.state['target']}")
        written: list[tuple[str, str]] = []  # (canonical, target code)
        for start, results in writer.write([record for _, _, record in ready]):
            for (position, canonical_code, record), result in zip(ready[start:start + len(results)], results,
                                                                  strict=True):
                if isinstance(result, Receipt):
                    counts.written += 1 if result.created else 0
                    counts.unchanged += 0 if result.created else 1
                    written.append((canonical_code, _code_text(record.natural_key)))
                    continue
                self._report(Problem(phase, phase, canonical_code, str(result),
                                     field=(result.details or {}).get("field"), position=position,
                                     vendor_code=result.vendor_code),
                             connection_id=self.target_id, raw=record.model_dump(mode="json"), error=result)
                counts.failed += 1
        return written

    def _bind(self, session: Session, phase: str, written: list[tuple[str, str]]) -> None:
        """Bind what was written in the target's id map; resolve the records' open errors."""
        if written and phase != "locations":  # bins have no id-map entries: their warehouse is mapped
            _, conflicts = bind_many(session, self.target_id, phase, [Binding(c, t, t) for c, t in written])
            for conflict in conflicts:
                self._report(Problem(phase, phase, conflict.wanted.canonical_id, str(conflict),
                                              field=conflict.field), connection_id=self.target_id)
        if written:
            record_written(session, connection_ids=(self.target_id, self.source_id), entity=phase,
                           record_keys=[c for c, _ in written], by="migrate")

    # -- balances ----------------------------------------------------------------------------------

    def _phase_balances(self, counts: PhaseCounts) -> None:
        kind = self._opening_kind()
        failed = self._failed_codes()
        if self.dry_run and self._dry_warehouses is None:
            self._dry_warehouses = {w.code for page in self.target.read(Entity.WAREHOUSES) for w in page.records}
        # warehouse by warehouse, so each page makes (at most) one document of up to a page of lines
        for warehouse in self._source_warehouses():
            if warehouse in self.state.setdefault("wh_done", []):
                continue
            for page in self._pages(f"balances:{warehouse}", self.source.read_balances, warehouse=warehouse):
                with self.store.session() as session:
                    movements = self._balance_page(session, page, counts, kind, *failed)
                counts.pages += 1
                if not self.dry_run:
                    with self.store.session(write=True) as session:
                        self._flush(session)
                        if movements:
                            enqueue_many(session, movements, [self.state["target"]], connections=self.connections,
                                         source_connection=self.state["source"])
                        self.state["token"] = page.resume
                        self._checkpoint(session)
                self.on_progress("balances", counts)
                if page.resume is None:
                    break
            self.state["wh_done"].append(warehouse)
            if not self.dry_run:
                self._checkpoint()

    def _source_warehouses(self, *, bin_managed: bool = False) -> list[str]:
        """The source's warehouse codes (the bin-managed ones only if asked), sorted (a few; read
        again on resume, same order)."""
        codes: set[str] = set()
        for page in self.source.read(Entity.WAREHOUSES):
            codes.update(w.code for w in page.records if w.bin_managed or not bin_managed)
            if page.resume is None:
                break
        return sorted(codes)

    def _failed_codes(self) -> tuple[set[str], set[str], set[str]]:
        """Canonical codes of items, warehouses and bins (``WH/BIN``) with an open error-queue entry
        (they are not in the target): their balances are reported instead of sinking a whole
        document. A dry run knows only the bins it found missing itself."""
        if self.dry_run:
            return set(), set(), set(self._dry_missing_bins)
        out: dict[str, set[str]] = {"items": set(), "warehouses": set(), "locations": set()}
        with self.store.session() as session:
            for entity, key in session.execute(select(ErrorQueue.entity, ErrorQueue.record_key).where(
                    ErrorQueue.connection_id.in_((self.source_id, self.target_id)),
                    ErrorQueue.entity.in_(tuple(out)), ErrorQueue.outbox_id.is_(None),
                    ErrorQueue.status.in_((ErrorStatus.OPEN, ErrorStatus.RETRYING)))):
                if key:
                    out[entity].add(key)
        return out["items"], out["warehouses"], out["locations"]

    def _balance_page(self, session: Session, page: Page[StockBalance], counts: PhaseCounts,
                      kind: MovementKind | None, failed_items: set[str], failed_warehouses: set[str],
                      failed_bins: set[str]) -> list[canonical.Movement]:
        first = counts.read + 1
        counts.read += len(page.records) + len(page.errors)
        for n, error in enumerate(page.errors):
            self._report(Problem("balances", "balances", error.record_key,
                                          f"cannot read it: {error.message}", field=error.field,
                                          position=first + len(page.records) + n),
                         connection_id=self.source_id, raw=error.raw)
            counts.failed += 1
        records = page.records
        skus = codemap.to_canonicals(session, self.source_id, "items", {b.sku for b in records}, rules=self.rules)
        whs = codemap.to_canonicals(session, self.source_id, "warehouses", {b.warehouse for b in records},
                                    rules=self.rules)
        item_codes = self._to_target(session, "items", [c for c in skus.values() if c])
        wh_codes = self._to_target(session, "warehouses", [c for c in whs.values() if c])
        known = self.ws.items("src", [c for c in skus.values() if c]) if self.dry_run else {}
        in_target = self.ws.items("tgt", [c for c in skus.values() if c]) if self.dry_run else {}
        groups: dict[str, list[canonical.MovementLine]] = defaultdict(list)
        for n, balance in enumerate(records):
            position = first + n
            sku, wh = skus.get(balance.sku), whs.get(balance.warehouse)
            record = f"{sku or balance.sku}@{wh or balance.warehouse}" + (f"/{balance.bin}" if balance.bin else "") + (
                f"#{balance.lot}" if balance.lot else "")
            raw = balance.model_dump(mode="json")

            def fail(field_: str, message: str) -> None:
                self._report(Problem("balances", "balances", record, message, field=field_,
                                              position=position), connection_id=self.source_id, raw=raw)
                counts.failed += 1

            if balance.on_hand == 0:
                counts.unchanged += 1
                continue
            if balance.on_hand < 0:
                fail("on_hand", f"negative on-hand {balance.on_hand} {balance.unit} cannot be an opening balance; "
                                "correct it in the source first")
                continue
            if sku is None or item_codes.get(sku) is None:
                fail("sku", f"the code map has no code for item {balance.sku!r}")
                continue
            if wh is None or wh_codes.get(wh) is None:
                fail("warehouse", f"the code map has no code for warehouse {balance.warehouse!r}")
                continue
            if sku in failed_items or balance.sku in failed_items:
                fail("sku", f"item {sku!r} was not migrated (see its error-queue entry); its stock is left out")
                continue
            if wh in failed_warehouses or balance.warehouse in failed_warehouses:
                fail("warehouse", f"warehouse {wh!r} was not migrated (see its error-queue entry)")
                continue
            if balance.bin and f"{wh}/{balance.bin}" in failed_bins:
                fail("bin", f"bin {balance.bin!r} of warehouse {wh!r} is not in {self.state['target']} (see its own "
                            "problem); its stock is left out")
                continue
            if self.dry_run:
                problem = self._dry_balance_problem(sku, str(wh_codes[wh]), balance, known, in_target)
                if problem is not None:
                    fail(*problem)
                    continue
            try:
                line = canonical.MovementLine(
                    line_no=1, sku=item_codes[sku], quantity=balance.on_hand, unit=balance.unit,
                    to_warehouse=wh_codes[wh], to_bin=balance.bin, lot=balance.lot, unit_cost=balance.unit_cost)
            except (RecordInvalid, ValidationError, ValueError) as exc:
                fail(_field_of(exc) or "on_hand", _message(exc))
                continue
            groups[str(wh_codes[wh])].append(line)
        if kind is None:
            return []
        movements = []
        for warehouse in sorted(groups):
            lines = groups[warehouse]
            for start in range(0, len(lines), self.state["lines"]):
                chunk = lines[start:start + self.state["lines"]]
                n = self.state["seq"].get(warehouse, 0) + 1
                self.state["seq"][warehouse] = n
                try:
                    movement = canonical.Movement(
                        reference=run_reference(self.run_id, warehouse, n), kind=kind,
                        document_date=date.fromisoformat(self.state["date"]),
                        lines=tuple(line.replace(line_no=i) for i, line in enumerate(chunk, start=1)),
                        source_system=self.state["source"],
                        memo=f"erphub migration run {self.run_id}: opening balance from {self.state['source']}")
                except (RecordInvalid, ValidationError, ValueError) as exc:
                    for line in chunk:
                        self._report(Problem("balances", "balances", f"{line.sku}@{warehouse}", _message(exc),
                                                      field=_field_of(exc)), connection_id=self.source_id)
                    counts.failed += len(chunk)
                    continue
                movements.append(movement)
                counts.written += len(chunk)
                counts.movements += 1
        return movements

    def _dry_balance_problem(self, sku: str, wh: str, balance: StockBalance, known: dict[str, tuple[str, bool]],
                             in_target: dict[str, tuple[str, bool]]) -> tuple[str, str] | None:
        migrating_items = "items" in self.state["entities"]
        source_item = known.get(sku) if migrating_items else None
        target_item = in_target.get(sku)
        if source_item is not None and not source_item[1]:
            return "sku", f"item {sku!r} would fail to migrate (see its own problem); its stock would be left out"
        unit = source_item[0] if source_item is not None else target_item[0] if target_item is not None else None
        if unit is None:
            return "sku", (f"item {sku!r} is neither migrated by this run nor in {self.state['target']}; "
                           "the document would be refused")
        if unit != balance.unit:
            return "unit", (f"stock of {sku!r} is in {balance.unit} but the item is kept in {unit}; "
                            "unit conversion is out of scope")
        if self._dry_warehouses is not None and wh not in self._dry_warehouses:
            return "warehouse", f"warehouse {wh!r} is neither migrated by this run nor in {self.state['target']}"
        return None

    # -- delivery ----------------------------------------------------------------------------------

    def _phase_deliver(self, counts: PhaseCounts) -> None:
        worker = f"migrate-{self.run_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        target = self.state["target"]
        deadline = time.monotonic() + self.options.deliver_timeout
        limit = max(self.target.capabilities.max_batch, 1) * 4
        while True:
            delivery.sweep(self.store)
            results = delivery.deliver_due(self.store, self.connections, worker_id=worker, limit=limit,
                                           policy=self.policy, targets=[target])
            sent, outstanding, dead, next_due = self._delivery_state()
            counts.written, counts.movements, counts.failed = sent, outstanding, dead
            self.on_progress("deliver", counts)
            if outstanding == 0:
                return
            with self.store.session() as session:
                paused = self.connections.is_paused(session, target)
            if paused:
                log.error("migration %d: %s is paused (%s); %d document(s) wait in the outbox", self.run_id, target,
                          paused, outstanding)
                return
            if not results:
                if time.monotonic() >= deadline:
                    log.warning("migration %d: %d document(s) still outstanding after %.0f s; `erphub sync run` "
                                "or `erphub migrate --resume %d` delivers them", self.run_id, outstanding,
                                self.options.deliver_timeout, self.run_id)
                    return
                wait = 0.2 if next_due is None else (next_due - utcnow()).total_seconds()
                self.sleep(min(max(wait, 0.01), 1.0))

    def _delivery_state(self) -> tuple[int, int, int, Any]:
        prefix = f"MIG-{self.run_id}-%"
        with self.store.session() as session:
            rows = session.execute(
                select(Outbox.status, func.count(), func.min(Outbox.next_attempt_at))
                .join(Movement, Movement.id == Outbox.movement_id)
                .where(Outbox.target_connection_id == self.target_id, Movement.reference.like(prefix))
                .group_by(Outbox.status)).all()
        by = {status: (n, due) for status, n, due in rows}
        sent = by.get(OutboxStatus.SENT, (0, None))[0]
        outstanding = sum(by.get(s, (0, None))[0] for s in _IN_FLIGHT)
        dead = sum(by.get(s, (0, None))[0] for s in (OutboxStatus.FAILED, OutboxStatus.DEAD))
        dues = [by[s][1] for s in _IN_FLIGHT if s in by and by[s][1] is not None]
        return sent, outstanding, dead, min(dues) if dues else None


def _code_text(key: Any) -> str:
    """A natural key as one code: ``WH01/A-01-01`` for a bin location (warehouse, bin)."""
    return "/".join(str(part) for part in key) if isinstance(key, tuple) else str(key)


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _field_of(exc: BaseException) -> str | None:
    if isinstance(exc, RecordInvalid) and exc.problems:
        return exc.problems[0].field or None
    if isinstance(exc, ValidationError) and exc.errors():
        return ".".join(str(p) for p in exc.errors()[0].get("loc", ())) or None
    return getattr(exc, "field", None)


def _message(exc: BaseException) -> str:
    if isinstance(exc, RecordInvalid):
        return str(exc)
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:3])
    return str(exc)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def load_state(store: Store, run_id: int) -> dict[str, Any]:
    """The checkpoint of a migration run (its plan, position and counts)."""
    with store.session() as session:
        run = session.get(SyncRun, run_id)
        if run is None or run.mode != SyncMode.MIGRATE:
            raise ConfigError(f"run {run_id} is not a migration run")
        return json.loads(run.resume_token or "{}")


def default_report_path(run_id: int, directory: str | Path = ".") -> Path:
    return Path(directory) / f"erphub-migrate-{run_id}.md"

