"""Console sessions: server-side, in memory, per replica.

The cookie carries only a random session id (256 bits); the control key itself is used once at
sign-in and never stored, in the cookie or here. A session holds the owner and the id of the key
it was opened with (so deactivating that key ends it), a per-session CSRF token and one-shot
notices. Sessions expire after `ttl_ms` without use and at most `max_entries` are kept (the
least recently used is dropped first), so a flood of sign-ins cannot exhaust memory.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from scheduler.clock import Clock
from scheduler_ingest.auth import ControlPrincipal

SESSION_ID_BYTES = 32


@dataclass
class Session:
    session_id: str
    principal: ControlPrincipal
    csrf_token: str
    expires_ms: float  # on the monotonic clock
    notices: list[str] = field(default_factory=list)

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given, self.csrf_token)

    def take_notices(self) -> list[str]:
        taken, self.notices = self.notices, []
        return taken


class SessionStore:
    def __init__(self, clock: Clock, ttl_ms: int, max_entries: int) -> None:
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._max = max_entries
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, principal: ControlPrincipal) -> Session:
        session = Session(
            session_id=secrets.token_urlsafe(SESSION_ID_BYTES),
            principal=principal,
            csrf_token=secrets.token_urlsafe(SESSION_ID_BYTES),
            expires_ms=self._clock.monotonic_ms() + self._ttl_ms,
        )
        with self._lock:
            self._sessions[session.session_id] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of that id (its expiry is pushed back), None if unknown or expired."""
        if not session_id:
            return None
        now = self._clock.monotonic_ms()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires_ms <= now:
                del self._sessions[session_id]
                return None
            session.expires_ms = now + self._ttl_ms
            self._sessions.move_to_end(session_id)
            return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)

    def close_where_key(self, key_id: str) -> None:
        """End every session opened with that control key (it was deactivated)."""
        with self._lock:
            for sid in [s for s, v in self._sessions.items() if v.principal.key_id == key_id]:
                del self._sessions[sid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
