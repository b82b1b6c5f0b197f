"""migratekit's internal state words are exactly migration_common's enum values."""

from __future__ import annotations

from migratekit import _states as s
from migration_common import Phase, Status, SyncType


def test_words_match_the_contract() -> None:
    assert (SyncType.FULL.value, SyncType.INCREMENTAL.value) == (s.FULL, s.INCREMENTAL)
    assert (
        Status.QUEUED.value,
        Status.RUNNING.value,
        Status.COMPLETED.value,
        Status.FAILED.value,
    ) == (s.QUEUED, s.RUNNING, s.COMPLETED, s.FAILED)
    assert (Phase.COPY.value, Phase.VERIFY.value, Phase.DONE.value) == (s.COPY, s.VERIFY, s.DONE)
    assert set(s.TERMINAL) == {v.value for v in Status if v.is_terminal}
