"""The one writer of master data: ``connector.upsert`` in batches, under the retry policy.

Migration (:mod:`sync.migrate`) and master-data flows (:mod:`sync.propagate`) both write items,
warehouses and bin locations through :class:`MasterWriter`, so they behave alike:

* **batches** of ``batch`` records, by default the target's ``capabilities.max_batch``; a target
  without a bulk endpoint (``max_batch`` 1) gets the whole list in one call and splits it itself.
* **retries**: each call goes through :meth:`sync.retry.RetryPolicy.call` (``Transient`` and
  ``RateLimited`` retried in-process). Upsert is idempotent by nature (the connector looks the
  codes up first), so a call whose answer was lost (``Ambiguous``) is simply sent again, and so are
  the records a call answered with a retryable error of their own (a ``$batch`` stopped half way:
  "not sent"), after :meth:`RetryPolicy.batch_wait`, up to ``inline_attempts`` times.
* **refusals**: a record refused for its own sake (``Action.DEAD_LETTER`` — ``Rejected``,
  ``ContractViolation`` — or ``Action.DEFER``, a missing dependency) is that record's result; the
  others go on. A call refused as a whole is tried again record by record, so one bad record does
  not sink its batch. :func:`record_refusal` puts a refusal in the error queue (kind, vendor code,
  field), :func:`record_written` resolves the entries of records written since.
* **stops**: anything else (auth, configuration, a transient failure that outlived the retries,
  an answer lost three times) is raised: the target as a whole is unfit now. The caller keeps its
  cursor (propagation) or its checkpoint (migration) where it was, and the next run sends the same
  records again, which upsert absorbs.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session

from connectors.base import Connector, Entity, Receipt
from connectors.errors import Action, Ambiguous, ConnectorError, ContractViolation
from sync.pull_errors import dead_letter, resolve_written
from sync.retry import RetryPolicy
from sync.store import ErrorQueue

__all__ = ["AMBIGUOUS_SENDS", "MasterWriter", "Result", "record_refusal", "record_written", "refused"]

log = logging.getLogger("erphub.sync.master_writer")

Result = Receipt | ConnectorError
#: Sends of one call whose answer keeps getting lost before the writer gives up (and stops).
AMBIGUOUS_SENDS = 3


def refused(error: ConnectorError) -> bool:
    """The record's own problem (refused, or waiting for a dependency): dead-letter it, go on."""
    return error.action in (Action.DEAD_LETTER, Action.DEFER)


class MasterWriter:
    """Upserts ``entity`` records into ``connector``; see the module documentation."""

    def __init__(self, connector: Connector, entity: Entity, *, policy: RetryPolicy, batch: int | None = None,
                 what: str | None = None) -> None:
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.connector, self.entity, self.policy, self.batch = connector, Entity(entity), policy, batch
        self.what = what or f"upsert {self.entity.value} into {getattr(connector, 'name', connector)}"

    def size(self, count: int) -> int:
        """Records per call for a list of ``count``."""
        if self.batch is not None:
            return self.batch
        cap = self.connector.capabilities.max_batch
        return cap if cap > 1 else max(1, count)

    def write(self, records: Sequence[Any]) -> Iterator[tuple[int, list[Result]]]:
        """Write ``records`` batch by batch, yielding ``(start, results)`` per batch: one result per
        record of ``records[start:start + len(results)]``, in order (a :class:`Receipt`, or the
        error that refused that record). Raises the error that stops the target."""
        size = self.size(len(records))
        for start in range(0, len(records), size):
            yield start, self.write_batch(records[start:start + size])

    def write_batch(self, records: Sequence[Any]) -> list[Result]:
        """One batch; see :meth:`write`."""
        results: list[Result | None] = [None] * len(records)
        pending = list(range(len(records)))
        attempt = 0
        while pending:
            attempt += 1
            try:
                answers = self.policy.call(self.connector.upsert, self.entity, [records[i] for i in pending],
                                           what=self.what)
            except ConnectorError as exc:
                if refused(exc):
                    self._one_by_one(records, pending, results, exc)
                    break
                if isinstance(exc, Ambiguous) and attempt < AMBIGUOUS_SENDS:
                    log.info("%s: answer lost (%s); sending the same %d record(s) again", self.what, exc, len(pending))
                    continue
                raise
            if len(answers) != len(pending):
                raise ContractViolation(f"{self.what}: {len(answers)} results for {len(pending)} records")
            again = []
            for index, answer in zip(pending, answers, strict=True):
                results[index] = answer
                if isinstance(answer, ConnectorError) and not refused(answer):
                    if not self._resendable(answer):
                        raise answer  # the target as a whole is unfit (auth, configuration)
                    again.append(index)
            if again and attempt >= max(self.policy.inline_attempts, AMBIGUOUS_SENDS):
                raise results[again[0]]  # type: ignore[misc]
            if again:
                errors = [results[i] for i in again]
                self.policy.sleep(self.policy.batch_wait(attempt, errors))  # type: ignore[arg-type]
            pending = again
        return [r if r is not None else ContractViolation(f"{self.what}: no result") for r in results]

    def _one_by_one(self, records: Sequence[Any], pending: list[int], results: list[Result | None],
                    error: ConnectorError) -> None:
        """A call refused as a whole: each record on its own, so only the bad ones are refused."""
        if len(pending) == 1:
            results[pending[0]] = error
            return
        log.info("%s: %d records refused together (%s); trying them one by one", self.what, len(pending), error)
        for index in pending:
            results[index] = self.write_batch([records[index]])[0]

    def _resendable(self, error: ConnectorError) -> bool:
        return isinstance(error, Ambiguous) or self.policy.retries_inline(error)


def record_refusal(session: Session, *, connection_id: int, entity: str, record_key: str, error: ConnectorError,
                   raw: Any = None, note: str = "") -> ErrorQueue:
    """The error-queue entry (or a bump of it) of a record the target refused, in the caller's
    transaction: the error's kind and vendor code, the field the connector named, the record."""
    return dead_letter(session, connection_id=connection_id, entity=entity, record_key=record_key,
                       message=f"{note}{error}", field=(error.details or {}).get("field"), raw=raw,
                       kind=error.kind, vendor_code=error.vendor_code)


def record_written(session: Session, *, connection_ids: Iterable[int], entity: str, record_keys: Sequence[str],
                   by: str) -> None:
    """Resolve the open error-queue entries of records now written (on each of ``connection_ids``)."""
    if not record_keys:
        return
    for connection_id in connection_ids:
        resolve_written(session, connection_id=connection_id, entity=entity, record_keys=record_keys, by=by)
