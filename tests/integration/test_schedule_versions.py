"""A schedule whose timing a newer version wrote (a recurrence version this one cannot read), met
by this version's occurrence runner during a rolling update: skipped and logged by the pass over
every schedule and by the reads of due ones, never raised (it would stop every other schedule's
occurrences). The newer version's runner creates its occurrences."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from scheduler.domain.recurrence import Recurrence
from scheduler.settings import CassandraSettings
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.migrate import apply_migrations
from scheduler.store.ports import Schedule

pytestmark = pytest.mark.integration
T0 = 1_893_499_200_000


@pytest.fixture
def session(cassandra_session: Session, cassandra_settings: CassandraSettings) -> Iterator[Session]:
    apply_migrations(cassandra_session, cassandra_settings, T0)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    yield cassandra_session


def test_a_timing_written_by_a_newer_version_is_skipped_not_raised(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    store = CassandraScheduleStore(session)
    for schedule_id in ("old", "new"):
        store.put(Schedule("app-1", schedule_id, Recurrence("rate(1 hour)"), "{}", T0, T0))
    newer = json.dumps({"version": 99, "expression": "rate(1 hour)", "jitter": "5m"})
    session.execute(  # a later write than the put's (its timestamp is updated_ms, in µs)
        "UPDATE schedules USING TIMESTAMP %s SET recurrence_json = %s"
        " WHERE app_id = 'app-1' AND schedule_id = 'new'",
        ((T0 + 1) * 1000, newer),
    )

    assert [t.schedule_id for t in store.scan_timings()] == ["old"]
    assert list(store.get_many("app-1", ["old", "new"])) == ["old"]
    assert "schedule app-1/new skipped: recurrence version 99" in caplog.text
