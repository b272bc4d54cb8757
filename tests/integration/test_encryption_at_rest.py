"""Encryption at rest on the real Cassandra: what is stored, legacy rows, backfill, rotation.

"Previous version" rows are written by the adapters with the PLAIN cipher (no keyring), which
writes exactly what the version before encryption wrote: the plain value in the same column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cassandra.cluster import Session

from scheduler.domain.recurrence import Recurrence
from scheduler.domain.status import Status
from scheduler.encryption import (
    PLAIN,
    ColumnCipher,
    EncryptionSettings,
    Keyring,
    UnreadableValue,
    is_sealed,
    key_id_of,
    new_key,
)
from scheduler.records import DueMessage
from scheduler.settings import CassandraSettings
from scheduler.store import reencrypt as reencrypt_module
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.migrate import apply_migrations
from scheduler.store.ports import Application, LogEntry, MessageContent, Schedule, StatusUpdate
from scheduler.store.reencrypt import PLAIN_TEXT, reencrypt

pytestmark = pytest.mark.integration

T0 = 1_893_499_200_000
BUCKET = T0 + 3_600_000
K1, K2 = new_key(), new_key()
SECRET, OLD_SECRET, HEADER = "whsec_current", "whsec_previous", "Bearer s3cret-token"
PAYLOAD = '{"card":"4111 1111 1111 1111","note":"wörld"}'


def cipher(primary: str, payloads: bool = True, **keys: str) -> ColumnCipher:
    ring = Keyring.parse(json.dumps({"primary": primary, "keys": keys}))
    return ColumnCipher(ring, secrets=True, payloads=payloads)


@pytest.fixture
def session(cassandra_session: Session, cassandra_settings: CassandraSettings) -> Iterator[Session]:
    apply_migrations(cassandra_session, cassandra_settings, T0)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    yield cassandra_session


def app(app_id: str = "app_1", secret: str = SECRET) -> Application:
    return Application(
        app_id=app_id,
        owner_id="alice",
        name="hooks",
        type="REST",
        endpoint="https://example.com/hook",
        auth_header_name="Authorization",
        auth_header_value=HEADER,
        signing_secret=secret,
        previous_signing_secret=OLD_SECRET,
        previous_secret_valid_until_ms=T0 + 1,
        created_ms=T0,
        updated_ms=T0,
    )


def message(message_id: str = "m1") -> DueMessage:
    return DueMessage(
        message_id=message_id,
        app_id="app_1",
        generation=0,
        attempt=1,
        due_ms=BUCKET + 10,
        send_at_ms=BUCKET + 10,
        created_ms=T0,
        payload_json=PAYLOAD,
    )


def schedule() -> Schedule:
    return Schedule("app_1", "s1", Recurrence("rate(1 hour)"), PAYLOAD, T0, T0)


def write_all(session: Session, c: ColumnCipher, message_id: str = "m1") -> None:
    """An app, a message record, its bucket row and a schedule, through the adapters."""
    CassandraAppStore(session, c).put_app(app())
    m = message(message_id)
    content = MessageContent("app_1", message_id, PAYLOAD, m.send_at_ms, T0)
    state = StatusUpdate(Status.QUEUED, 0, 1, m.due_ms, T0)
    CassandraMessageStore(session, c).save(content, state, LogEntry(T0, "0:1:q", Status.QUEUED))
    CassandraBucketStore(session, cipher=c).store(BUCKET, 0, m)
    CassandraScheduleStore(session, c).put(schedule())


def stored(session: Session) -> dict[str, Any]:
    """The raw cells, as any reader of the table (or a copy of its files) sees them."""
    a = session.execute(
        "SELECT signing_secret, previous_signing_secret, auth_header_value FROM applications"
        " WHERE app_id = 'app_1'"
    ).one()
    m = session.execute(
        "SELECT payload_json FROM messages WHERE app_id = 'app_1' AND message_id = 'm1'"
    ).one()
    b = session.execute(
        "SELECT payload_json FROM due_by_bucket WHERE bucket_ms = %s AND app_id = 'app_1'"
        " AND shard = 0",
        (BUCKET,),
    ).one()
    s = session.execute(
        "SELECT payload_json FROM schedules WHERE app_id = 'app_1' AND schedule_id = 's1'"
    ).one()
    return {
        "applications.signing_secret": a.signing_secret,
        "applications.previous_signing_secret": a.previous_signing_secret,
        "applications.auth_header_value": a.auth_header_value,
        "messages.payload_json": m.payload_json,
        "due_by_bucket.payload_json": b.payload_json,
        "schedules.payload_json": s.payload_json,
    }


def assert_reads_back(session: Session, c: ColumnCipher) -> None:
    got = CassandraAppStore(session, c).get_app("app_1")
    assert got == app()
    view = CassandraMessageStore(session, c).get("app_1", "m1")
    assert view is not None and view.content.payload_json == PAYLOAD
    assert list(CassandraBucketStore(session, cipher=c).read(BUCKET, "app_1", 0)) == [message()]
    assert CassandraScheduleStore(session, c).get("app_1", "s1") == schedule()


def test_stored_columns_are_ciphertext_and_read_back_right(session: Session) -> None:
    c = cipher("k1", k1=K1)
    write_all(session, c)
    cells = stored(session)
    for column, value in cells.items():
        assert is_sealed(value) and key_id_of(value) == "k1", column
        for plain in (SECRET, OLD_SECRET, HEADER, "4111"):
            assert plain not in value, column
    assert_reads_back(session, c)
    # A reader without the key refuses the value instead of using the ciphertext.
    with pytest.raises(UnreadableValue):
        CassandraAppStore(session, PLAIN).get_app("app_1")


def test_services_that_never_use_secrets_read_apps_whose_secrets_they_cannot_open(
    session: Session,
) -> None:
    """The bucketer and the releaser need an app's existence, type and deletion, never its
    secrets: a secret sealed under a key missing from their keyring (or tampered with) must not
    fail their reads, or one app would stall every tenant's batch and release tick."""
    write_all(session, cipher("k1", k1=K1))
    read = CassandraAppStore(session, cipher("k2", k2=K2), open_secrets=False).get_app("app_1")
    assert read is not None and (read.app_id, read.type, read.endpoint) == (
        "app_1",
        "REST",
        "https://example.com/hook",
    )
    assert (read.signing_secret, read.auth_header_value, read.previous_signing_secret) == (
        "",
        None,
        None,
    )
    # Such a store cannot write an application back: it would wipe the secrets it never read.
    with pytest.raises(RuntimeError, match="secrets"):
        CassandraAppStore(session, PLAIN, open_secrets=False).put_app(read)


def test_payloads_stay_plain_unless_payload_encryption_is_on(session: Session) -> None:
    c = cipher("k1", payloads=False, k1=K1)
    write_all(session, c)
    cells = stored(session)
    assert cells["messages.payload_json"] == PAYLOAD
    assert cells["due_by_bucket.payload_json"] == PAYLOAD
    assert cells["schedules.payload_json"] == PAYLOAD
    assert is_sealed(cells["applications.signing_secret"])
    assert_reads_back(session, c)


def test_keys_without_the_switch_write_what_the_previous_version_reads(session: Session) -> None:
    """Rolling upgrade: the new version with its keyring but encryption not yet enabled writes
    plain text, so a replica of the previous version still running reads every value right."""
    c = EncryptionSettings(keyring=json.dumps({"primary": "k1", "keys": {"k1": K1}})).cipher()
    write_all(session, c)
    assert stored(session) == {
        "applications.signing_secret": SECRET,
        "applications.previous_signing_secret": OLD_SECRET,
        "applications.auth_header_value": HEADER,
        "messages.payload_json": PAYLOAD,
        "due_by_bucket.payload_json": PAYLOAD,
        "schedules.payload_json": PAYLOAD,
    }


def test_legacy_plain_rows_are_read_and_the_backfill_encrypts_them(session: Session) -> None:
    write_all(session, PLAIN)  # the previous version
    c = cipher("k1", k1=K1)
    assert_reads_back(session, c)  # read transparently before the backfill

    dry = reencrypt(session, c, dry_run=True)
    assert sum(r.rewritten for r in dry) == 6
    assert stored(session)["applications.signing_secret"] == SECRET  # dry run: nothing changed

    reports = reencrypt(session, c)
    assert {r.column: r.rewritten for r in reports} == dict.fromkeys(stored(session), 1)
    assert all(key_id_of(v) == "k1" for v in stored(session).values())
    assert_reads_back(session, c)
    again = reencrypt(session, c)  # idempotent: nothing left to do
    assert sum(r.rewritten for r in again) == 0
    assert {k for r in again for k in r.values} == {"k1"}


def test_rotation_reencrypts_under_the_new_primary_then_the_old_key_can_go(
    session: Session,
) -> None:
    write_all(session, cipher("k1", k1=K1))
    both = cipher("k2", k1=K1, k2=K2)
    reports = reencrypt(session, both)
    assert sum(r.rewritten for r in reports) == 6
    assert {k for r in reports for k in r.values} == {"k2"}
    assert all(key_id_of(v) == "k2" for v in stored(session).values())
    assert_reads_back(session, cipher("k2", k2=K2))  # k1 removed from the keyring
    with pytest.raises(UnreadableValue):
        CassandraAppStore(session, cipher("k1", k1=K1)).get_app("app_1")


def test_decrypt_writes_plain_text_back_for_a_rollback(session: Session) -> None:
    write_all(session, cipher("k1", k1=K1))
    with pytest.raises(RuntimeError, match="still enabled"):
        reencrypt(session, cipher("k1", k1=K1), decrypt=True)
    switched_off = ColumnCipher(cipher("k1", k1=K1).keyring, secrets=False, payloads=False)
    reports = reencrypt(session, switched_off, decrypt=True)
    assert sum(r.rewritten for r in reports) == 6
    assert {k for r in reports for k in r.values} == {PLAIN_TEXT}
    assert stored(session) == {
        "applications.signing_secret": SECRET,
        "applications.previous_signing_secret": OLD_SECRET,
        "applications.auth_header_value": HEADER,
        "messages.payload_json": PAYLOAD,
        "due_by_bucket.payload_json": PAYLOAD,
        "schedules.payload_json": PAYLOAD,
    }
    assert_reads_back(session, PLAIN)  # what the previous version reads


def test_a_value_of_a_missing_key_is_reported_and_left_alone(session: Session) -> None:
    write_all(session, cipher("k1", k1=K1))
    reports = reencrypt(session, cipher("k2", k2=K2))
    assert sum(r.rewritten for r in reports) == 0
    assert {k for r in reports for k in r.values} == {"unreadable k1"}
    assert all(key_id_of(v) == "k1" for v in stored(session).values())


def test_plain_payloads_stay_plain_when_only_secrets_are_encrypted(session: Session) -> None:
    write_all(session, PLAIN)
    reports = reencrypt(session, cipher("k1", payloads=False, k1=K1))
    by_column = {r.column: r for r in reports}
    assert by_column["messages.payload_json"].values == {PLAIN_TEXT: 1}
    assert stored(session)["messages.payload_json"] == PAYLOAD
    assert is_sealed(stored(session)["applications.auth_header_value"])


def test_a_concurrent_write_wins_over_the_reencryption_and_deletes_stay(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command read a cell, then a service rotated the signing secret and the releaser
    dropped the bucket: the rewrite of what was read must not undo either."""
    write_all(session, PLAIN)
    c = cipher("k1", k1=K1)
    scan = reencrypt_module._scan

    def stale_scan(session_: Session, column: Any, fetch_size: int) -> Iterator[Any]:
        rows = list(scan(session_, column, fetch_size))
        if column.label == "applications.signing_secret":
            CassandraAppStore(session, c).put_app(app(secret="whsec_rotated"))
        if column.table == "due_by_bucket":
            CassandraBucketStore(session, cipher=c).drop_partition(BUCKET, "app_1", 0)
        yield from rows

    monkeypatch.setattr(reencrypt_module, "_scan", stale_scan)
    reencrypt(session, c)
    got = CassandraAppStore(session, c).get_app("app_1")
    assert got is not None and got.signing_secret == "whsec_rotated"
    assert list(CassandraBucketStore(session, cipher=c).read(BUCKET, "app_1", 0)) == []
    assert session.execute("SELECT * FROM due_by_bucket").one() is None


def test_the_cli_command_reports_the_keys_in_use(session: Session) -> None:
    from scheduler.cli import run_reencrypt

    write_all(session, cipher("k1", k1=K1))
    lines, code = run_reencrypt(session, cipher("k2", k1=K1, k2=K2), dry_run=False)
    assert code == 0
    assert "keys in use: k2 (primary: k2)" in lines
    lines, code = run_reencrypt(session, cipher("k3", k3=new_key()), dry_run=True)
    assert code == 1 and any("unreadable k2" in line for line in lines)
    with pytest.raises(RuntimeError, match="not enabled"):
        run_reencrypt(session, EncryptionSettings().cipher(), dry_run=False)
