"""`CassandraAppStore`: the AppStore port on the tables of 0001_initial.cql.

Tables: `owners`, `control_keys` (by hash) + `control_keys_by_owner`, `applications` +
`applications_by_owner`, `data_keys` (by hash) + `data_keys_by_app`. Each key is written to its
two tables in one logged batch, so the lookup-by-hash row and the listing row never disagree.
A deactivation reads the listing row (which carries the hash) to find the lookup row; the owner
or app in the listing partition key is the ownership check.
"""

from __future__ import annotations

import builtins
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType

from scheduler.domain.policy import DeliveryPolicy
from scheduler.encryption import PLAIN, ColumnCipher, cell
from scheduler.store.apps import ControlKey, DataKey, Owner
from scheduler.store.ports import Application

_APP_COLUMNS = (
    "app_id",
    "owner_id",
    "name",
    "description",
    "type",
    "endpoint",
    "auth_header_name",
    "auth_header_value",
    "send_back_format",
    "signing_secret",
    "previous_signing_secret",
    "previous_secret_valid_until_ms",
    "shards",
    "created_ms",
    "updated_ms",
    "deleted_ms",
    "delivery_policy_json",
    "failure_type",
    "failure_endpoint",
)
# Read with the app, written only by set_deliveries_paused (never by put_app).
_READ_ONLY_COLUMNS = ("deliveries_paused",)
# Encrypted at rest once encryption is on (scheduler.encryption), bound to (column, app id).
SECRET_COLUMNS = ("auth_header_value", "signing_secret", "previous_signing_secret")


class CassandraAppStore:
    """AppStore on Cassandra. `session` must be bound to the scheduler keyspace; `cipher`
    seals the secret columns on write and opens them (or legacy plain text) on read.

    `open_secrets=False` is for services that never use an app's secrets (the bucketer, the
    releaser): the secret columns are not read, so a value their keyring cannot open (a missing
    key, tampering) fails only the dispatcher's delivery of that app, not every tenant's batch.
    Such a store refuses to write applications, which would wipe the secrets it never read."""

    def __init__(
        self, session: Session, cipher: ColumnCipher = PLAIN, open_secrets: bool = True
    ) -> None:
        self._session = session
        self._cipher = cipher
        self._open_secrets = open_secrets
        p = session.prepare
        self._insert_owner = p(
            "INSERT INTO owners (owner_id, created_ms) VALUES (?, ?) IF NOT EXISTS"
        )
        self._select_owners = p("SELECT owner_id, created_ms FROM owners")
        self._insert_ck = p(
            "INSERT INTO control_keys (key_hash, key_id, owner_id, active, created_ms)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        self._insert_ck_by_owner = p(
            "INSERT INTO control_keys_by_owner (owner_id, key_id, key_hash, active, created_ms)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        self._select_ck = p(
            "SELECT key_id, owner_id, active, created_ms FROM control_keys WHERE key_hash = ?"
        )
        self._select_ck_by_owner = p(
            "SELECT key_id, key_hash, active, created_ms FROM control_keys_by_owner"
            " WHERE owner_id = ?"
        )
        self._select_one_ck_by_owner = p(
            "SELECT key_hash FROM control_keys_by_owner WHERE owner_id = ? AND key_id = ?"
        )
        self._deactivate_ck = p("UPDATE control_keys SET active = false WHERE key_hash = ?")
        self._deactivate_ck_by_owner = p(
            "UPDATE control_keys_by_owner SET active = false WHERE owner_id = ? AND key_id = ?"
        )
        placeholders = ", ".join("?" for _ in _APP_COLUMNS)
        self._insert_app = p(
            f"INSERT INTO applications ({', '.join(_APP_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
        )
        self._insert_app_by_owner = p(
            "INSERT INTO applications_by_owner (owner_id, app_id, name, created_ms)"
            " VALUES (?, ?, ?, ?)"
        )
        self._select_app = p(
            f"SELECT {', '.join(_APP_COLUMNS + _READ_ONLY_COLUMNS)} FROM applications"  # noqa: S608
            " WHERE app_id = ?"
        )
        # The change's own instant as the write timestamp: the later change wins.
        self._set_paused = p(
            "UPDATE applications USING TIMESTAMP ? SET deliveries_paused = ? WHERE app_id = ?"
        )
        self._select_apps_by_owner = p(
            "SELECT app_id FROM applications_by_owner WHERE owner_id = ?"
        )
        self._insert_dk = p(
            "INSERT INTO data_keys (key_hash, key_id, app_id, owner_id, active, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._insert_dk_by_app = p(
            "INSERT INTO data_keys_by_app (app_id, key_id, key_hash, active, created_ms)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        self._select_dk = p(
            "SELECT key_id, app_id, owner_id, active, created_ms FROM data_keys WHERE key_hash = ?"
        )
        self._select_dk_by_app = p(
            "SELECT key_id, key_hash, active, created_ms FROM data_keys_by_app WHERE app_id = ?"
        )
        self._select_one_dk_by_app = p(
            "SELECT key_hash FROM data_keys_by_app WHERE app_id = ? AND key_id = ?"
        )
        self._deactivate_dk = p("UPDATE data_keys SET active = false WHERE key_hash = ?")
        self._deactivate_dk_by_app = p(
            "UPDATE data_keys_by_app SET active = false WHERE app_id = ? AND key_id = ?"
        )

    # -- owners and control keys ----------------------------------------------------------------

    def ensure_owner(self, owner_id: str, now_ms: int) -> None:
        self._session.execute(self._insert_owner, (owner_id, now_ms))

    def list_owners(self) -> builtins.list[Owner]:
        rows = self._session.execute(self._select_owners)
        return sorted((Owner(r.owner_id, r.created_ms) for r in rows), key=lambda o: o.owner_id)

    def add_control_key(self, key: ControlKey, key_hash: bytes) -> None:
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._insert_ck, (key_hash, key.key_id, key.owner_id, key.active, key.created_ms))
        batch.add(
            self._insert_ck_by_owner,
            (key.owner_id, key.key_id, key_hash, key.active, key.created_ms),
        )
        self._session.execute(batch)

    def control_key(self, key_hash: bytes) -> ControlKey | None:
        row = self._session.execute(self._select_ck, (key_hash,)).one()
        if row is None or row.key_id is None:
            return None
        return ControlKey(row.key_id, row.owner_id, bool(row.active), row.created_ms)

    def control_keys(self, owner_id: str) -> builtins.list[ControlKey]:
        rows = self._session.execute(self._select_ck_by_owner, (owner_id,))
        return [ControlKey(r.key_id, owner_id, bool(r.active), r.created_ms) for r in rows]

    def deactivate_control_key(self, owner_id: str, key_id: str) -> bool:
        row = self._session.execute(self._select_one_ck_by_owner, (owner_id, key_id)).one()
        if row is None:
            return False
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._deactivate_ck, (row.key_hash,))
        batch.add(self._deactivate_ck_by_owner, (owner_id, key_id))
        self._session.execute(batch)
        return True

    # -- applications ---------------------------------------------------------------------------

    def get_app(self, app_id: str) -> Application | None:
        row = self._session.execute(self._select_app, (app_id,)).one()
        if row is None or row.owner_id is None:
            return None
        return _app(row, self._cipher, self._open_secrets)

    def put_app(self, app: Application) -> None:
        if not self._open_secrets:
            raise RuntimeError("an app store that does not open secrets cannot write apps")
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._insert_app, tuple(self._stored(app, column) for column in _APP_COLUMNS))
        batch.add(self._insert_app_by_owner, (app.owner_id, app.app_id, app.name, app.created_ms))
        self._session.execute(batch)

    def set_deliveries_paused(self, app_id: str, paused: bool, at_ms: int) -> None:
        self._session.execute(self._set_paused, (at_ms * 1000, paused, app_id))

    def apps(self, owner_id: str, include_deleted: bool = False) -> builtins.list[Application]:
        ids = [r.app_id for r in self._session.execute(self._select_apps_by_owner, (owner_id,))]
        futures = [self._session.execute_async(self._select_app, (app_id,)) for app_id in ids]
        found = []
        for future in futures:
            row = future.result().one()
            if row is None or row.owner_id != owner_id:
                continue
            app = _app(row, self._cipher, self._open_secrets)
            if include_deleted or app.deleted_ms is None:
                found.append(app)
        return sorted(found, key=lambda a: (a.created_ms, a.app_id))

    # -- data keys ------------------------------------------------------------------------------

    def add_data_key(self, key: DataKey, key_hash: bytes) -> None:
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(
            self._insert_dk,
            (key_hash, key.key_id, key.app_id, key.owner_id, key.active, key.created_ms),
        )
        batch.add(
            self._insert_dk_by_app, (key.app_id, key.key_id, key_hash, key.active, key.created_ms)
        )
        self._session.execute(batch)

    def data_key(self, key_hash: bytes) -> DataKey | None:
        row = self._session.execute(self._select_dk, (key_hash,)).one()
        if row is None or row.key_id is None:
            return None
        return DataKey(row.key_id, row.app_id, row.owner_id, bool(row.active), row.created_ms)

    def data_keys(self, app_id: str) -> builtins.list[DataKey]:
        rows = self._session.execute(self._select_dk_by_app, (app_id,))
        owner = self._owner_of(app_id)
        return [DataKey(r.key_id, app_id, owner, bool(r.active), r.created_ms) for r in rows]

    def deactivate_data_key(self, app_id: str, key_id: str) -> bool:
        row = self._session.execute(self._select_one_dk_by_app, (app_id, key_id)).one()
        if row is None:
            return False
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._deactivate_dk, (row.key_hash,))
        batch.add(self._deactivate_dk_by_app, (app_id, key_id))
        self._session.execute(batch)
        return True

    def _stored(self, app: Application, column: str) -> object:
        if column == "delivery_policy_json":
            return app.policy.to_column()
        value = getattr(app, column)
        if column in SECRET_COLUMNS:
            return self._cipher.seal_secret(value, secret_cell(column, app.app_id))
        return value

    def _owner_of(self, app_id: str) -> str:
        app = self.get_app(app_id)
        return app.owner_id if app is not None else ""


def secret_cell(column: str, app_id: str) -> bytes:
    """Associated data of an application's secret column."""
    return cell(f"applications.{column}", app_id)


def _app(row: Any, cipher: ColumnCipher, open_secrets: bool = True) -> Application:
    values = {column: getattr(row, column) for column in _APP_COLUMNS}
    for column in SECRET_COLUMNS:
        if open_secrets:
            values[column] = cipher.open(values[column], secret_cell(column, row.app_id))
        else:
            values[column] = None
    values["send_back_format"] = values["send_back_format"] or "payload_field"
    values["signing_secret"] = values["signing_secret"] or ""
    values["created_ms"] = values["created_ms"] or 0
    values["updated_ms"] = values["updated_ms"] or 0
    values["policy"] = DeliveryPolicy.from_column(values.pop("delivery_policy_json"))
    values["deliveries_paused"] = bool(row.deliveries_paused)
    return Application(**values)
