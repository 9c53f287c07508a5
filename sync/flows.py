"""What one step of a configured flow does (the flows themselves come from ``[[flows]]``).

=================  =============================================================================
flow kind          one run
=================  =============================================================================
``master_data``    pull each entity (items, warehouses, locations, partners; those the source's
                   connector supports) from the source into the store, then upsert what changed
                   into every target that can write it (:mod:`sync.propagate`).
``movements``      incremental pull of movements from the source; each new movement is written
                   with one outbox row per target in the page's transaction
                   (:func:`sync.push.enqueue`), then delivered by the ``deliver`` actors.
``balances``       a balance snapshot of the source (:func:`sync.pull.pull_balances`), for
                   reconciliation; nothing is pushed.
=================  =============================================================================

The flow objects are duck-typed (:class:`FlowLike`): ``erphub.config.Flow`` fits, and the engine
does not import the CLI's configuration.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from connectors.base import Entity

if TYPE_CHECKING:
    from sync.actors import Runtime

log = logging.getLogger("erphub.sync.flows")

__all__ = ["FlowLike", "Step", "flow_steps", "pull_step"]

MASTER_DATA = "master_data"
MOVEMENTS = "movements"
BALANCES = "balances"


class FlowLike(Protocol):
    name: str
    kind: Any  # "master_data" | "movements" | "balances" (a StrEnum is fine)
    source: str
    targets: Sequence[str]
    entities: Sequence[Any]
    every: timedelta


@dataclass(frozen=True)
class Step:
    """One pull of a flow: ``connection`` is the flow's source."""

    flow: str
    connection: str
    entity: str
    mode: str


def _kind(flow: FlowLike) -> str:
    return str(getattr(flow.kind, "value", flow.kind))


def flow_steps(runtime: Runtime, flow: FlowLike) -> list[Step]:
    """The pulls one run of ``flow`` makes, skipping entities its source cannot read."""
    kind = _kind(flow)
    if kind == BALANCES:
        return [Step(flow.name, flow.source, BALANCES, "full")]
    capabilities = runtime.connections.connector(flow.source).capabilities
    steps = []
    for raw in flow.entities:
        entity = str(getattr(raw, "value", raw))
        if entity == BALANCES:
            continue
        try:
            as_entity = Entity(entity)
        except ValueError:
            continue
        if as_entity not in capabilities.entities:
            log.info("flow %s: %s cannot read %s; skipped", flow.name, flow.source, entity)
            continue
        mode = "incremental" if as_entity in capabilities.incremental else "full"
        steps.append(Step(flow.name, flow.source, entity, mode))
    return steps


def pull_step(runtime: Runtime, connection: str, entity: str, mode: str, flow_name: str | None = None) -> Any:
    """Run one step: pull ``entity`` from ``connection`` into the store; movements are enqueued
    for the targets of flow ``flow_name`` in the same page transaction. Returns the engine's
    result (``PullResult``, or the balance snapshot id)."""
    from sync import pull as engine

    if entity == BALANCES:
        return engine.pull_balances(runtime.store, runtime.connections, connection)
    if entity == MOVEMENTS:
        flow = runtime.flows.get(flow_name) if flow_name else None
        targets = list(flow.targets) if flow is not None else []
        if not targets:
            raise ValueError(f"pulling movements from {connection} needs a movements flow with targets "
                             f"(flow {flow_name!r} is not configured here)")
        from sync.push import enqueue

        def on_movement(session: Any, movement: Any) -> None:
            enqueue(session, movement, targets, connections=runtime.connections, source_connection=connection,
                    source_document=movement.source_document)

        return engine.pull_movements(runtime.store, runtime.connections, connection, on_movement,
                                     mode=mode, lookback=runtime.lookback)
    result = engine.pull(runtime.store, runtime.connections, connection, entity, mode=mode,
                         lookback=runtime.lookback)
    flow = runtime.flows.get(flow_name) if flow_name else None
    if flow is not None and _kind(flow) == MASTER_DATA and flow.targets:
        from sync.propagate import propagate

        for outcome in propagate(runtime.store, runtime.connections, connection, list(flow.targets), entity,
                                 policy=runtime.policy):
            log.info("flow %s: %s → %s: %d created, %d already there, %d refused%s", flow_name, entity,
                     outcome.target, outcome.created, outcome.existing, outcome.rejected,
                     f" (stopped: {outcome.stopped})" if outcome.stopped else "")
    return result
