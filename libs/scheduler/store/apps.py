"""The control-plane store: owners, applications, control keys and data keys.

`AppStore` extends the pipeline's `AppLookup` with what ingest's control plane needs. Keys are
found by the HMAC of their secret (scheduler.security); the secret itself is never stored.
`InMemoryAppStore` is its fake; tests/contract/test_app_store.py runs against both.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Protocol

from scheduler.security import new_key_id, new_secret
from scheduler.store.ports import Application, AppLookup


@dataclass(frozen=True)
class Owner:
    owner_id: str
    created_ms: int


@dataclass(frozen=True)
class ControlKey:
    key_id: str
    owner_id: str
    active: bool
    created_ms: int


@dataclass(frozen=True)
class DataKey:
    key_id: str
    app_id: str
    owner_id: str
    active: bool
    created_ms: int


def new_control_key(owner_id: str, now_ms: int) -> tuple[str, ControlKey]:
    """A new active control key and its secret (to show once, then forget)."""
    return new_secret(), ControlKey(new_key_id("ck"), owner_id, True, now_ms)


def new_data_key(app_id: str, owner_id: str, now_ms: int) -> tuple[str, DataKey]:
    """A new active data key and its secret (to show once, then forget)."""
    return new_secret(), DataKey(new_key_id("dk"), app_id, owner_id, True, now_ms)


class AppStore(AppLookup, Protocol):
    def ensure_owner(self, owner_id: str, now_ms: int) -> None:
        """Create the owner if missing (idempotent; keeps the first creation time)."""

    def list_owners(self) -> list[Owner]:
        """Every owner, sorted by id. Operator use (a full scan of a small table)."""

    def add_control_key(self, key: ControlKey, key_hash: bytes) -> None: ...

    def control_key(self, key_hash: bytes) -> ControlKey | None:
        """The key whose secret hashes to `key_hash` (active or not), None if unknown."""

    def control_keys(self, owner_id: str) -> list[ControlKey]:
        """The owner's control keys, sorted by id."""

    def deactivate_control_key(self, owner_id: str, key_id: str) -> bool:
        """False (and nothing changed) unless the key exists and belongs to `owner_id`."""

    def put_app(self, app: Application) -> None:
        """Create or replace an application (every field as given, except `deliveries_paused`,
        which only `set_deliveries_paused` changes: an update racing a pause cannot undo it)."""

    def set_deliveries_paused(self, app_id: str, paused: bool, at_ms: int) -> None:
        """Pause or resume the app's deliveries. Ordered by `at_ms`, not by arrival: of two
        changes the later instant wins (a tie: paused)."""

    def apps(self, owner_id: str, include_deleted: bool = False) -> list[Application]:
        """The owner's applications, oldest first (then id)."""

    def add_data_key(self, key: DataKey, key_hash: bytes) -> None: ...

    def data_key(self, key_hash: bytes) -> DataKey | None:
        """The key whose secret hashes to `key_hash` (active or not), None if unknown."""

    def data_keys(self, app_id: str) -> list[DataKey]:
        """The app's data keys, sorted by id."""

    def deactivate_data_key(self, app_id: str, key_id: str) -> bool:
        """False (and nothing changed) unless the key exists and belongs to `app_id`."""


class InMemoryAppStore:
    """A fake AppStore with the same contract as the Cassandra adapter."""

    def __init__(self) -> None:
        self._owners: dict[str, Owner] = {}
        self._control: dict[bytes, ControlKey] = {}
        self._apps: dict[str, Application] = {}
        self._data: dict[bytes, DataKey] = {}
        self._paused_at: dict[str, tuple[int, bool]] = {}  # the cell's write stamp
        self._lock = threading.Lock()

    def get_app(self, app_id: str) -> Application | None:
        with self._lock:
            return self._apps.get(app_id)

    def ensure_owner(self, owner_id: str, now_ms: int) -> None:
        with self._lock:
            self._owners.setdefault(owner_id, Owner(owner_id, now_ms))

    def list_owners(self) -> list[Owner]:
        with self._lock:
            return sorted(self._owners.values(), key=lambda o: o.owner_id)

    def add_control_key(self, key: ControlKey, key_hash: bytes) -> None:
        with self._lock:
            self._control[key_hash] = key

    def control_key(self, key_hash: bytes) -> ControlKey | None:
        with self._lock:
            return self._control.get(key_hash)

    def control_keys(self, owner_id: str) -> list[ControlKey]:
        with self._lock:
            keys = [k for k in self._control.values() if k.owner_id == owner_id]
        return sorted(keys, key=lambda k: k.key_id)

    def deactivate_control_key(self, owner_id: str, key_id: str) -> bool:
        with self._lock:
            for key_hash, key in self._control.items():
                if key.key_id == key_id and key.owner_id == owner_id:
                    self._control[key_hash] = dataclasses.replace(key, active=False)
                    return True
        return False

    def put_app(self, app: Application) -> None:
        with self._lock:
            before = self._apps.get(app.app_id)
            paused = before is not None and before.deliveries_paused
            self._apps[app.app_id] = dataclasses.replace(app, deliveries_paused=paused)

    def set_deliveries_paused(self, app_id: str, paused: bool, at_ms: int) -> None:
        with self._lock:
            app = self._apps.get(app_id)
            if app is None:
                return
            stamp = self._paused_at.get(app_id)
            if stamp is not None and (at_ms, paused) < stamp:
                return  # an earlier change arriving late (a tie: paused, as Cassandra's True)
            self._paused_at[app_id] = (at_ms, paused)
            self._apps[app_id] = dataclasses.replace(app, deliveries_paused=paused)

    def apps(self, owner_id: str, include_deleted: bool = False) -> list[Application]:
        with self._lock:
            found = [
                a
                for a in self._apps.values()
                if a.owner_id == owner_id and (include_deleted or a.deleted_ms is None)
            ]
        return sorted(found, key=lambda a: (a.created_ms, a.app_id))

    def add_data_key(self, key: DataKey, key_hash: bytes) -> None:
        with self._lock:
            self._data[key_hash] = key

    def data_key(self, key_hash: bytes) -> DataKey | None:
        with self._lock:
            return self._data.get(key_hash)

    def data_keys(self, app_id: str) -> list[DataKey]:
        with self._lock:
            keys = [k for k in self._data.values() if k.app_id == app_id]
        return sorted(keys, key=lambda k: k.key_id)

    def deactivate_data_key(self, app_id: str, key_id: str) -> bool:
        with self._lock:
            for key_hash, key in self._data.items():
                if key.key_id == key_id and key.app_id == app_id:
                    self._data[key_hash] = dataclasses.replace(key, active=False)
                    return True
        return False
