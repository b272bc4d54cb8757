"""Console sessions: stateless, signed, valid on every ingest replica (no sticky sessions).

The cookie carries the session itself: a random 256-bit session id, the owner, the id of the
control key it was opened with, when it was opened and when it was last used, signed with
HMAC-SHA256 under a key derived from `SCHEDULER_SECRET_PEPPER` (which every replica shares
already, or no replica could check another's keys). The control key itself is used once at
sign-in and never stored, in the cookie or anywhere. Nothing is kept in memory, so any replica
accepts a session another one opened.

A session ends after `ttl_ms` without use (each use re-signs the cookie with a new last-use
time, at most once a minute) and `max_age_ms` after sign-in whatever the use. Every page also
checks that the session's control key is still active in the shared store, so deactivating it
(here, through the API, on any replica) ends its sessions at once. Sign-out deletes the cookie
in the browser; a copy of it taken before would stay valid until one of those limits.

The CSRF token is derived from the session id under the same key (never in the cookie in
clear). One-shot notices ("Message ... aborted.") travel to the next page in a second signed
cookie, bound to the session id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from scheduler.clock import Clock
from scheduler_ingest.auth import ControlPrincipal

SESSION_ID_BYTES = 32
REFRESH_MS = 60_000  # a used session's cookie is re-signed when its last use is older than this
MAX_NOTICE_CHARS = 1_500  # a cookie holds ~4 KB; notices are short sentences
VERSION = 1


@dataclass
class Session:
    session_id: str
    principal: ControlPrincipal
    csrf_token: str
    issued_ms: int
    seen_ms: int  # last use, as signed in the cookie
    # Notices for the next page (a redirect carries them in the notice cookie) ...
    notices: list[str] = field(default_factory=list)
    # ... and the ones the previous request left for this page.
    carried: list[str] = field(default_factory=list)
    carried_shown: bool = False
    ended: bool = False  # signed out (or its key deactivated) in this request: no cookie back

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given, self.csrf_token)

    def take_notices(self) -> list[str]:
        """The notices to show on the page being rendered (carried in, then this request's)."""
        taken = self.carried + self.notices
        self.carried_shown = self.carried_shown or bool(self.carried)
        self.carried, self.notices = [], []
        return taken


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionStore:
    """Opens, reads and re-signs sessions; holds no session state (the cookie does)."""

    def __init__(self, clock: Clock, key: bytes, ttl_ms: int, max_age_ms: int) -> None:
        if len(key) < 32:
            raise ValueError("the session key must be at least 256 bits")
        self._clock = clock
        self._key = key
        self._ttl_ms = ttl_ms
        self._max_age_ms = max_age_ms

    # -- signing ---------------------------------------------------------------------------------

    def _mac(self, purpose: str, payload: str) -> str:
        msg = f"{purpose}|{payload}".encode()
        return _b64(hmac.new(self._key, msg, hashlib.sha256).digest())

    def _sign(self, purpose: str, value: dict[str, Any]) -> str:
        payload = _b64(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._mac(purpose, payload)}"

    def _verify(self, purpose: str, token: str | None) -> dict[str, Any] | None:
        if not token or len(token) > 4096 or token.count(".") != 1:
            return None
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            return None
        try:
            value = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _csrf(self, session_id: str) -> str:
        return self._mac("csrf", session_id)

    # -- sessions --------------------------------------------------------------------------------

    def open(self, principal: ControlPrincipal) -> Session:
        now = self._clock.now_ms()
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        return Session(session_id, principal, self._csrf(session_id), now, now)

    def cookie(self, session: Session) -> str:
        """The cookie value of a session, signed, its last use now."""
        session.seen_ms = self._clock.now_ms()
        return self._sign(
            "session",
            {
                "v": VERSION,
                "sid": session.session_id,
                "o": session.principal.owner_id,
                "k": session.principal.key_id,
                "iat": session.issued_ms,
                "seen": session.seen_ms,
            },
        )

    def get(self, token: str | None) -> Session | None:
        """The session of a cookie value: None unless signed by us and within both limits."""
        value = self._verify("session", token)
        if value is None or value.get("v") != VERSION:
            return None
        try:
            session_id, owner, key_id = str(value["sid"]), str(value["o"]), str(value["k"])
            issued, seen = int(value["iat"]), int(value["seen"])
        except (KeyError, TypeError, ValueError):
            return None
        now = self._clock.now_ms()
        if now >= seen + self._ttl_ms or now >= issued + self._max_age_ms:
            return None
        principal = ControlPrincipal(owner_id=owner, key_id=key_id)
        return Session(session_id, principal, self._csrf(session_id), issued, seen)

    def needs_refresh(self, session: Session) -> bool:
        return self._clock.now_ms() - session.seen_ms >= REFRESH_MS

    # -- notices ---------------------------------------------------------------------------------

    def notice_cookie(self, session: Session) -> str:
        kept: list[str] = []
        size = 0
        for notice in session.notices:
            size += len(notice)
            if size > MAX_NOTICE_CHARS:
                break
            kept.append(notice)
        return self._sign("notice", {"sid": session.session_id, "n": kept})

    def notices_of(self, session: Session, token: str | None) -> list[str]:
        """The notices a previous request of this same session left (none if not signed by us
        or left for another session)."""
        value = self._verify("notice", token)
        if value is None or value.get("sid") != session.session_id:
            return []
        found = value.get("n")
        return [n for n in found if isinstance(n, str)] if isinstance(found, list) else []
