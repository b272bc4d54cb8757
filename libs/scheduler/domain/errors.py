"""Validation errors carry the API's error token, so every layer reports them the same way."""

from __future__ import annotations


class ValidationError(ValueError):
    """Bad client input. `token` is the machine-readable code of the API (e.g. `invalid_sendAt`)."""

    def __init__(self, token: str, message: str) -> None:
        super().__init__(message)
        self.token = token
        self.message = message
