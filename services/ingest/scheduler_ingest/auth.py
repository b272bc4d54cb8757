"""Authentication: data keys (`Basic base64(appId:secret)`) and control keys (`Token <secret>`).

Missing, malformed, unknown or inactive credentials: 401. Valid credentials of the other kind
(a data key on a control route or the reverse): 403. A key is looked up by
HMAC-SHA256(pepper, secret) (scheduler.security), so the secret itself is never stored.

Lookups are cached per replica for `key_cache_ttl_ms` (default 10 s) in an LRU of at most
`key_cache_max` keys, so auth is not a Cassandra read per request. Deactivating a key (or
deleting its app) through this replica takes effect at once; through another replica within
the TTL. Unknown secrets are not cached (a flood of wrong secrets costs one read each).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from scheduler.clock import Clock
from scheduler.security import SecretHasher
from scheduler.store.apps import AppStore
from scheduler_ingest.errors import ApiError
from scheduler_ingest.metrics import IngestMetrics

MAX_HEADER_CHARS = 1024


@dataclass(frozen=True)
class DataPrincipal:
    app_id: str
    key_id: str
    owner_id: str


@dataclass(frozen=True)
class ControlPrincipal:
    owner_id: str
    key_id: str


V = TypeVar("V")


class TtlCache(Generic[V]):
    """A small thread-safe LRU with a time-to-live, on the monotonic clock."""

    def __init__(self, clock: Clock, ttl_ms: int, max_entries: int) -> None:
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock.monotonic_ms():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: bytes, value: V) -> None:
        if self._ttl_ms <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock.monotonic_ms() + self._ttl_ms, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard_where(self, predicate: Callable[[V], bool]) -> None:
        with self._lock:
            for key in [k for k, (_, v) in self._entries.items() if predicate(v)]:
                del self._entries[key]


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Basic realm="scheduler"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


@dataclass(frozen=True)
class _Credentials:
    scheme: str  # "basic" | "token"
    secret: str
    app_id: str | None = None


def parse_authorization(header: str | None) -> _Credentials:
    if not header:
        raise unauthorized("missing Authorization header")
    if len(header) > MAX_HEADER_CHARS:
        raise unauthorized("malformed Authorization header")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        raise unauthorized("malformed Authorization header")
    if scheme.lower() == "token":
        return _Credentials("token", value)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise unauthorized("malformed Basic credentials") from None
        app_id, sep, secret = decoded.partition(":")
        if not sep or not app_id or not secret:
            raise unauthorized("Basic credentials must be base64(appId:secret)")
        return _Credentials("basic", secret, app_id)
    raise unauthorized("unsupported Authorization scheme (use Basic or Token)")


class Authenticator:
    def __init__(
        self,
        store: AppStore,
        hasher: SecretHasher,
        clock: Clock,
        ttl_ms: int,
        max_entries: int,
        metrics: IngestMetrics,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._metrics = metrics
        self._data: TtlCache[DataPrincipal] = TtlCache(clock, ttl_ms, max_entries)
        self._control: TtlCache[ControlPrincipal] = TtlCache(clock, ttl_ms, max_entries)

    async def data(self, header: str | None) -> DataPrincipal:
        credentials = parse_authorization(header)
        if credentials.scheme == "token":
            await self._control_principal(credentials)  # 401 if not a valid key either
            raise forbidden("a control key cannot be used on message routes; use a data key")
        return await self._data_principal(credentials)

    async def control(self, header: str | None) -> ControlPrincipal:
        credentials = parse_authorization(header)
        if credentials.scheme == "basic":
            await self._data_principal(credentials)
            raise forbidden("a data key cannot be used on control routes; use a control key")
        return await self._control_principal(credentials)

    def forget_data_keys(self, predicate: Callable[[DataPrincipal], bool]) -> None:
        self._data.discard_where(predicate)

    def forget_control_keys(self, predicate: Callable[[ControlPrincipal], bool]) -> None:
        self._control.discard_where(predicate)

    async def _data_principal(self, credentials: _Credentials) -> DataPrincipal:
        key_hash = self._hasher.hash(credentials.secret)
        cached = self._data.get(key_hash)
        if cached is not None:
            self._metrics.key_cache.labels("hit").inc()
        else:
            self._metrics.key_cache.labels("miss").inc()
            cached = await run_in_threadpool(self._load_data_key, key_hash)
        if cached is None or cached.app_id != credentials.app_id:
            raise unauthorized("unknown or inactive data key")
        return cached

    def _load_data_key(self, key_hash: bytes) -> DataPrincipal | None:
        key = self._store.data_key(key_hash)
        if key is None or not key.active:
            return None
        app = self._store.get_app(key.app_id)
        if app is None or app.deleted_ms is not None:
            return None
        principal = DataPrincipal(key.app_id, key.key_id, key.owner_id)
        self._data.put(key_hash, principal)
        return principal

    async def _control_principal(self, credentials: _Credentials) -> ControlPrincipal:
        key_hash = self._hasher.hash(credentials.secret)
        cached = self._control.get(key_hash)
        if cached is not None:
            self._metrics.key_cache.labels("hit").inc()
        else:
            self._metrics.key_cache.labels("miss").inc()
            cached = await run_in_threadpool(self._load_control_key, key_hash)
        if cached is None:
            raise unauthorized("unknown or inactive control key")
        return cached

    def _load_control_key(self, key_hash: bytes) -> ControlPrincipal | None:
        key = self._store.control_key(key_hash)
        if key is None or not key.active:
            return None
        principal = ControlPrincipal(key.owner_id, key.key_id)
        self._control.put(key_hash, principal)
        return principal
