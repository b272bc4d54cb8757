"""Encryption at rest of the Cassandra columns that hold secrets and payloads (issue #18).

Which columns: `applications.signing_secret`, `previous_signing_secret` and
`auth_header_value` once encryption is on; `messages.payload_json` and
`due_by_bucket.payload_json` too when payload encryption is on as well. Only the storage
adapters call this module (`scheduler.store.cassandra_*`): every other layer sees plain values.

The envelope is text, so the columns keep their type (no migration):

    ENVELOPE_PREFIX key_id "." base64(nonce[12] || AES-256-GCM ciphertext and tag[16])

The prefix starts with a control character (U+001F), which no value of these columns can
start with in plain text: a payload is valid JSON, an auth header value has no control
characters, a signing secret is `whsec_...`. So a value without the prefix is plain text
written before encryption was switched on (or by a previous version) and is returned as is.

Associated data binds each ciphertext to its cell (column and row identity, see `cell`): a
ciphertext copied into another row or column does not decrypt.

Keys come from a keyring (JSON, see `Keyring.parse`): every key decrypts, the primary one
encrypts. `scheduler admin reencrypt` rewrites stored values under the primary key
(scheduler.store.reencrypt), after which a former key can be removed from the keyring.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENVELOPE_PREFIX = "\x1fenc1."
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit random nonces: safe for far more than 2^32 values per key
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class EncryptionError(RuntimeError):
    """The keyring or the settings are invalid (a start-up error: the service refuses to run)."""


class UnreadableValue(RuntimeError):
    """A stored ciphertext does not decrypt: its key is not in the keyring, it was altered, or it
    belongs to another cell. Never returned as a value: a webhook signed with a ciphertext, or an
    auth header carrying one, would be wrong; the caller fails and retries instead."""


class EncryptionSettings(BaseSettings):
    """`SCHEDULER_ENCRYPTION_*`: read by every service and the `scheduler` CLI."""

    model_config = SettingsConfigDict(
        env_prefix="SCHEDULER_ENCRYPTION_", frozen=True, extra="ignore"
    )

    keyring: SecretStr | None = Field(
        default=None, description="the keyring JSON itself (an env var from a Secret)"
    )
    keyring_file: str | None = Field(
        default=None, description="path of a file holding the keyring JSON (a mounted Secret)"
    )
    enabled: bool = Field(
        default=False,
        description="write secrets encrypted under the primary key; switch on only once every"
        " replica runs a version that reads ciphertext and has the keyring (docs/OPERATIONS.md)",
    )
    payloads: bool = Field(
        default=False, description="with `enabled`, encrypt stored payloads too (costs CPU)"
    )

    def cipher(self) -> ColumnCipher:
        """The cipher these settings ask for. Raises EncryptionError on a bad keyring, or when
        encryption is enabled without one."""
        keyring = self._keyring()
        if self.payloads and not self.enabled:
            raise EncryptionError("SCHEDULER_ENCRYPTION_PAYLOADS needs ..._ENABLED=true")
        if self.enabled and keyring is None:
            raise EncryptionError(
                "SCHEDULER_ENCRYPTION_ENABLED needs a keyring (SCHEDULER_ENCRYPTION_KEYRING or"
                " SCHEDULER_ENCRYPTION_KEYRING_FILE)"
            )
        return ColumnCipher(keyring, secrets=self.enabled, payloads=self.payloads)

    def _keyring(self) -> Keyring | None:
        if self.keyring is not None and self.keyring_file:
            raise EncryptionError("set SCHEDULER_ENCRYPTION_KEYRING or ..._KEYRING_FILE, not both")
        if self.keyring is not None:
            return Keyring.parse(self.keyring.get_secret_value())
        if self.keyring_file:
            try:
                text = Path(self.keyring_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise EncryptionError(f"cannot read the keyring file: {exc}") from None
            return Keyring.parse(text)
        return None


@dataclass(frozen=True)
class Keyring:
    """Keys by id; `primary` encrypts, every key decrypts."""

    primary: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """`{"primary": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "..."}}`.

        Key ids are 1 to 64 of `A-Z a-z 0-9 _ -`. Error messages never contain key material."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise EncryptionError("the keyring is not valid JSON") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("keys"), dict):
            raise EncryptionError('the keyring must be {"primary": id, "keys": {id: key}}')
        keys: dict[str, bytes] = {}
        for key_id, encoded in raw["keys"].items():
            if not _KEY_ID.fullmatch(key_id):
                raise EncryptionError(f"keyring: bad key id {key_id!r} (A-Z a-z 0-9 _ -, 1-64)")
            try:
                key = base64.b64decode(str(encoded), validate=True)
            except binascii.Error:
                raise EncryptionError(f"keyring: key {key_id} is not base64") from None
            if len(key) != KEY_BYTES:
                raise EncryptionError(f"keyring: key {key_id} is not {KEY_BYTES} bytes")
            keys[key_id] = key
        primary = raw.get("primary")
        if not isinstance(primary, str) or primary not in keys:
            raise EncryptionError("keyring: `primary` must name one of its keys")
        return cls(primary, keys)


def new_key() -> str:
    """A fresh key for the keyring: 32 random bytes, base64 (as `openssl rand -base64 32`)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


# A cell's associated data, or a function that computes it (see ColumnCipher.seal_payload).
AssociatedData = bytes | Callable[[], bytes]


def _resolved(aad: AssociatedData) -> bytes:
    return aad if isinstance(aad, bytes) else aad()


def cell(column: str, *row_key: str) -> bytes:
    """Associated data of one cell: table.column and the row's identity (unambiguous: the
    parts are length-prefixed)."""
    parts = (column, *row_key)
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(ENVELOPE_PREFIX)


def key_id_of(value: str) -> str | None:
    """The key id of an envelope; None for plain text."""
    if not is_sealed(value):
        return None
    return value[len(ENVELOPE_PREFIX) :].split(".", 1)[0]


class ColumnCipher:
    """Seals and opens column values. With no keyring it writes plain text and reads plain
    text only (an envelope raises UnreadableValue, never passes as a value)."""

    def __init__(self, keyring: Keyring | None, secrets: bool, payloads: bool) -> None:
        if (secrets or payloads) and keyring is None:
            raise EncryptionError("encrypting needs a keyring")
        self._keyring = keyring
        self._aeads = {k: AESGCM(v) for k, v in keyring.keys.items()} if keyring else {}
        self.secrets = secrets
        self.payloads = payloads

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring

    @property
    def primary(self) -> str | None:
        return self._keyring.primary if self._keyring else None

    def seal_secret(self, value: str | None, aad: bytes) -> str | None:
        """A secret as stored: sealed when encryption is on (None and "" stay as they are)."""
        return self._seal(value, aad) if self.secrets and value else value

    def seal_payload(self, value: str, aad: AssociatedData) -> str:
        """A payload as stored; `aad` may be a function, called only when the payload is
        sealed (computing a cell's associated data costs about a microsecond per message)."""
        return self._seal(value, _resolved(aad)) if self.payloads else value

    def seal(self, value: str, aad: bytes) -> str:
        """Seal under the primary key whatever the switches say (re-encryption)."""
        return self._seal(value, aad)

    @overload
    def open(self, stored: str, aad: AssociatedData) -> str: ...
    @overload
    def open(self, stored: None, aad: AssociatedData) -> None: ...
    @overload
    def open(self, stored: str | None, aad: AssociatedData) -> str | None: ...

    def open(self, stored: str | None, aad: AssociatedData) -> str | None:
        """The plain value of a stored one: plain text as is, an envelope decrypted (`aad`, if
        a function, is called only then)."""
        if stored is None or not stored.startswith(ENVELOPE_PREFIX):
            return stored
        key_id, _, body = stored[len(ENVELOPE_PREFIX) :].partition(".")
        aead = self._aeads.get(key_id)
        if aead is None:
            raise UnreadableValue(f"value encrypted with key {key_id!r}, not in the keyring")
        try:
            blob = binascii.a2b_base64(body, strict_mode=True)
        except (binascii.Error, ValueError):
            raise UnreadableValue(f"malformed envelope (key {key_id!r})") from None
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, sealed, _resolved(aad)).decode()
        except (InvalidTag, ValueError):
            raise UnreadableValue(
                f"value under key {key_id!r} does not decrypt here: altered, or another cell's"
            ) from None

    def _seal(self, value: str, aad: bytes) -> str:
        if self._keyring is None:
            raise EncryptionError("encrypting needs a keyring")
        primary = self._keyring.primary
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[primary].encrypt(nonce, value.encode(), aad)
        # Standard base64 in C: the urlsafe variant translates in Python (slower on big payloads).
        body = binascii.b2a_base64(nonce + sealed, newline=False).decode()
        return f"{ENVELOPE_PREFIX}{primary}.{body}"


# No keys: plain text written, plain text read, an envelope refused. Tests and fakes use it.
PLAIN = ColumnCipher(None, secrets=False, payloads=False)
