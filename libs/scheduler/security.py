"""Secrets of control keys and data keys (decision 7).

A secret is 256 random bits, shown to its owner once and stored only as
HMAC-SHA256(pepper, secret). Because the secret is random (not a password), a fast keyed hash
is enough and can be the indexed lookup key; the pepper lives outside Cassandra, so a copy of
the database alone does not allow checking guesses.

The pepper is `SCHEDULER_SECRET_PEPPER` (required). With `SCHEDULER_ENV=dev` only, a fixed,
public development pepper is used when none is set; never run production with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_BYTES = 32  # 256 bits; decision 7 asks for at least 128
# PUBLIC, for SCHEDULER_ENV=dev and tests only: anyone can recompute hashes made with it.
DEV_PEPPER = "dev-only-pepper-not-secret-do-not-use-in-production"
MIN_PEPPER_CHARS = 16


class PepperMissing(RuntimeError):
    pass


class SecuritySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", frozen=True, extra="ignore")

    env: str = Field(default="production", description="'dev' allows the public dev pepper")
    secret_pepper: SecretStr | None = Field(
        default=None, description="HMAC key for stored secret hashes (required in production)"
    )

    def pepper(self) -> bytes:
        if self.secret_pepper is not None:
            value = self.secret_pepper.get_secret_value()
            if len(value) < MIN_PEPPER_CHARS:
                raise PepperMissing(
                    f"SCHEDULER_SECRET_PEPPER must be at least {MIN_PEPPER_CHARS} characters"
                )
            return value.encode()
        if self.env == "dev":
            return DEV_PEPPER.encode()
        raise PepperMissing(
            "SCHEDULER_SECRET_PEPPER is not set (set SCHEDULER_ENV=dev to use the public "
            "development pepper on a dev machine)"
        )


class SecretHasher:
    """Makes new secrets and their stored form. Changing the pepper invalidates every key."""

    def __init__(self, pepper: bytes) -> None:
        if not pepper:
            raise PepperMissing("empty pepper")
        self._pepper = pepper

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> SecretHasher:
        return cls(settings.pepper())

    def hash(self, secret: str) -> bytes:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).digest()

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for `purpose` (e.g. signing console sessions), derived from the pepper
        (HMAC-SHA256 as a KDF, a distinct label per purpose): the same on every replica that
        shares the pepper, and never usable as a hash of a secret."""
        return hmac.new(
            self._pepper, b"scheduler-derived-key:" + purpose.encode(), hashlib.sha256
        ).digest()


def new_secret() -> str:
    """A fresh secret: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_key_id(prefix: str) -> str:
    """A public key id, e.g. `ck_3f9a...` (96 random bits; not a secret)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def new_signing_secret() -> str:
    """A webhook signing secret (HMAC key for delivery signatures), 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(SECRET_BYTES)
