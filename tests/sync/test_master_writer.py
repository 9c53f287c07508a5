"""The shared master-data writer: batches, retries, per-record fallback, stops."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from canonical import Warehouse
from connectors.base import Capabilities, Entity, Receipt
from connectors.errors import (
    Ambiguous,
    AuthError,
    ConnectorError,
    DependencyMissing,
    Rejected,
    Transient,
)
from sync.master_writer import MasterWriter
from sync.retry import RetryPolicy

FAST = RetryPolicy(scale=0.001, sleep=lambda s: None)


class Target:
    """A connector stand-in: ``answer(codes, call_no)`` decides each call's outcome."""

    name = "tgt"

    def __init__(self, answer: Callable[[list[str], int], Any], max_batch: int = 3) -> None:
        self.answer, self.calls = answer, []
        self.capabilities = Capabilities(entities=frozenset({Entity.WAREHOUSES}), movement_kinds=frozenset(),
                                         max_batch=max_batch, writable=frozenset({Entity.WAREHOUSES}))

    def upsert(self, entity: Entity, records: Sequence[Warehouse]) -> list[Receipt | ConnectorError]:
        codes = [r.code for r in records]
        self.calls.append(codes)
        outcome = self.answer(codes, len(self.calls))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome if outcome is not None else [Receipt(c, c) for c in codes]


def warehouses(n: int) -> list[Warehouse]:
    return [Warehouse(code=f"W{i}", name=f"仓{i}") for i in range(1, n + 1)]


def write(target: Target, records: list[Warehouse], **kw: Any) -> list[Receipt | ConnectorError]:
    writer = MasterWriter(target, Entity.WAREHOUSES, policy=FAST, **kw)  # type: ignore[arg-type]
    return [r for _, batch in writer.write(records) for r in batch]


def test_records_go_in_batches_of_the_targets_max_batch() -> None:
    target = Target(lambda codes, n: None, max_batch=3)
    results = write(target, warehouses(7))
    assert [len(c) for c in target.calls] == [3, 3, 1]
    assert [r.key for r in results] == [f"W{i}" for i in range(1, 8)]


def test_a_target_without_bulk_gets_the_whole_list_and_an_explicit_batch_wins() -> None:
    single = Target(lambda codes, n: None, max_batch=1)
    write(single, warehouses(5))
    assert [len(c) for c in single.calls] == [5]
    explicit = Target(lambda codes, n: None, max_batch=1)
    write(explicit, warehouses(5), batch=2)
    assert [len(c) for c in explicit.calls] == [2, 2, 1]


def test_a_batch_refused_as_a_whole_is_tried_record_by_record() -> None:
    # Given a target that refuses any call holding W2
    def answer(codes: list[str], n: int) -> Any:
        return Rejected("W2 is bad", vendor_code="E1") if "W2" in codes else None

    target = Target(answer)
    results = write(target, warehouses(3))
    # Then only W2 is refused, the others are written
    assert [type(r).__name__ for r in results] == ["Receipt", "Rejected", "Receipt"]
    assert target.calls == [["W1", "W2", "W3"], ["W1"], ["W2"], ["W3"]]


def test_a_lost_answer_is_sent_again_and_a_third_loss_stops() -> None:
    once = Target(lambda codes, n: Ambiguous("lost") if n == 1 else None)
    assert all(isinstance(r, Receipt) for r in write(once, warehouses(2)))
    assert len(once.calls) == 2
    always = Target(lambda codes, n: Ambiguous("lost"))
    with pytest.raises(Ambiguous):
        write(always, warehouses(2))
    assert len(always.calls) == 3


def test_records_answered_with_a_retryable_error_are_sent_again_alone() -> None:
    # Given a call that writes W1 and reports W2, W3 "not sent" (a $batch stopped half way)
    def answer(codes: list[str], n: int) -> Any:
        if n == 1:
            return [Receipt("W1", "W1")] + [Transient(f"{c}: not sent") for c in codes[1:]]
        return None

    target = Target(answer)
    results = write(target, warehouses(3))
    assert all(isinstance(r, Receipt) for r in results)
    assert target.calls == [["W1", "W2", "W3"], ["W2", "W3"]]


def test_a_missing_dependency_is_the_records_own_result() -> None:
    target = Target(lambda codes, n: [DependencyMissing("needs W0") if c == "W1" else Receipt(c, c) for c in codes])
    results = write(target, warehouses(2))
    assert isinstance(results[0], DependencyMissing) and isinstance(results[1], Receipt)


@pytest.mark.parametrize("error", [AuthError("bad login"), Transient("down")], ids=["auth", "transient"])
def test_an_unfit_target_stops_the_writing(error: ConnectorError) -> None:
    target = Target(lambda codes, n: error)
    with pytest.raises(type(error)):
        write(target, warehouses(4))
    # a transient failure was retried in-process first; an auth failure was not
    assert len(target.calls) == (FAST.inline_attempts if isinstance(error, Transient) else 1)


def test_an_auth_error_answered_for_a_record_stops_the_writing() -> None:
    target = Target(lambda codes, n: [AuthError("session gone") for _ in codes])
    with pytest.raises(AuthError):
        write(target, warehouses(2))
