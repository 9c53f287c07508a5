"""Deliberately broken variants of the reference connector: each must fail the suite.

``test_broken.py`` runs the suite against them (``ERPHUB_CONFORMANCE_TARGETS``) and asserts
that the tests named in ``CAUGHT_BY`` fail.
"""
from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from canonical import Movement
from connectors.base import Entity, Page, Receipt
from connectors.errors import RateLimited, Transient
from tests.reference.client import ReferenceClient
from tests.reference.connector import ReferenceConnector
from tests.reference.target import REFERENCE, target


class IgnoresKey(ReferenceConnector):
    """push() neither sends the key as Idempotency-Key nor looks it up: a repeated key creates a
    duplicate document."""

    def push(self, movement: Movement, key: str) -> Receipt:
        return self._create(movement, key)


class MintsAKey(ReferenceConnector):
    """push() sends a fresh Idempotency-Key each time instead of the movement's key, so the server
    never sees a repeat: a repeated key creates a duplicate document."""

    def push(self, movement: Movement, key: str) -> Receipt:
        return self._create(movement, key, idempotency_key=uuid.uuid4().hex)


class _Swallows503Client(ReferenceClient):
    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().call(method, path, **kwargs)
        except Transient as exc:
            if isinstance(exc, RateLimited):
                raise
            return {"ok": True, "rows": [], "next": None, "id": 0, "number": "", "status": "posted"}


class Swallows503(ReferenceConnector):
    """A 503 is taken for an empty success."""

    client_class = _Swallows503Client


class _SkipsARecordClient(ReferenceClient):
    def pages(self, path: str, *, params: Mapping[str, Any], offset: str | None,
              limit: int) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        for rows, nxt in super().pages(path, params=params, offset=offset, limit=limit):
            # an off-by-one resume token: the first record of every next page is lost
            yield rows, None if nxt is None else str(int(nxt) + 1)
            return


class SkipsARecord(ReferenceConnector):
    """Each page's resume token points one record too far."""

    client_class = _SkipsARecordClient

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        while True:
            page = next(super().read(entity, since=since, resume=resume, page_size=page_size))
            yield page
            if page.resume is None:
                return
            resume = page.resume


class ExclusiveWatermark(ReferenceConnector):
    """``since`` treated as exclusive: a record changed exactly at the watermark is lost."""

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        later = since + timedelta(seconds=1) if since is not None else None
        return super().read(entity, since=later, resume=resume, page_size=page_size)


IGNORES_KEY = target(IgnoresKey, "broken-ignores-key")
MINTS_A_KEY = target(MintsAKey, "broken-mints-a-key")
SWALLOWS_503 = target(Swallows503, "broken-swallows-503")
SKIPS_A_RECORD = target(SkipsARecord, "broken-skips-a-record")
EXCLUSIVE_WATERMARK = target(ExclusiveWatermark, "broken-exclusive-watermark")

# Skip declarations: a blank reason fails the test it names, and the guard fails for it and for a
# name that is no test; a written reason skips.
BLANK_SKIP = dataclasses.replace(REFERENCE, id="broken-blank-skip",
                                 skips={"test_check_succeeds": "  ", "test_no_such_test": "a typo"})
DECLARED_SKIP = dataclasses.replace(REFERENCE, id="declared-skip",
                                    skips={"test_check_succeeds": "the vendor has no cheap read"})

# target → the conformance tests that must fail for it
CAUGHT_BY: dict[str, set[str]] = {
    IGNORES_KEY.name: {"test_repeated_key_creates_nothing_new", "test_lost_answer_after_commit_is_ambiguous_then_found"},
    MINTS_A_KEY.name: {"test_repeated_key_creates_nothing_new", "test_lost_answer_after_commit_is_ambiguous_then_found"},
    SWALLOWS_503.name: {"test_503_is_transient"},
    SKIPS_A_RECORD.name: {"test_paging_and_resume", "test_balance_paging_and_resume"},
    EXCLUSIVE_WATERMARK.name: {"test_incremental_includes_the_record_at_the_watermark"},
    BLANK_SKIP.name: {"test_check_succeeds", "test_skips_name_real_tests_and_say_why"},
}
TARGETS = [IGNORES_KEY, MINTS_A_KEY, SWALLOWS_503, SKIPS_A_RECORD, EXCLUSIVE_WATERMARK, BLANK_SKIP, DECLARED_SKIP]
