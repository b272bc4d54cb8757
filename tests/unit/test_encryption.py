"""scheduler.encryption: the envelope, the keyring, the settings (no servers)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scheduler.encryption import (
    ENVELOPE_PREFIX,
    PLAIN,
    ColumnCipher,
    EncryptionError,
    EncryptionSettings,
    Keyring,
    UnreadableValue,
    cell,
    is_sealed,
    key_id_of,
    new_key,
)

pytestmark = pytest.mark.unit

K1, K2 = new_key(), new_key()
ROW = cell("applications.signing_secret", "app_1")
SECRET = "whsec_abcdefghijklmnop"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def keyring(primary: str = "k1", **keys: str) -> Keyring:
    return Keyring.parse(json.dumps({"primary": primary, "keys": keys or {"k1": K1}}))


def cipher(primary: str = "k1", payloads: bool = True, **keys: str) -> ColumnCipher:
    return ColumnCipher(keyring(primary, **keys), secrets=True, payloads=payloads)


def test_round_trip_hides_the_value_and_names_the_key() -> None:
    c = cipher()
    stored = c.seal_secret(SECRET, ROW)
    assert stored is not None and stored.startswith(ENVELOPE_PREFIX)
    assert SECRET not in stored and key_id_of(stored) == "k1"
    # prefix, key id, ".", base64 of nonce (12) + ciphertext (as long as the value) + tag (16)
    body = stored.removeprefix(ENVELOPE_PREFIX + "k1.")
    assert len(base64.b64decode(body, validate=True)) == 12 + len(SECRET) + 16
    assert c.open(stored, ROW) == SECRET
    payload = '{"hello":"wörld"}'
    assert c.open(c.seal_payload(payload, ROW), ROW) == payload


def test_each_seal_uses_a_fresh_nonce() -> None:
    c = cipher()
    assert c.seal(SECRET, ROW) != c.seal(SECRET, ROW)


def test_an_unknown_key_id_is_refused() -> None:
    stored = cipher("k2", k2=K2).seal(SECRET, ROW)
    with pytest.raises(UnreadableValue, match="'k2', not in the keyring"):
        cipher().open(stored, ROW)


def test_without_a_keyring_a_ciphertext_is_refused_not_returned() -> None:
    stored = cipher().seal(SECRET, ROW)
    with pytest.raises(UnreadableValue):
        PLAIN.open(stored, ROW)


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_a_tampered_ciphertext_is_refused(where: str) -> None:
    c = cipher()
    stored = c.seal(SECRET, ROW)
    start = len(ENVELOPE_PREFIX + "k1.")
    # Clear of the last characters (padding, and bits that decoding ignores); the top bit of
    # the character's 6 is flipped.
    at = {"nonce": start, "ciphertext": start + 20, "tag": len(stored) - 6}[where]
    flipped = B64[(B64.index(stored[at]) + 32) % 64]
    tampered = stored[:at] + flipped + stored[at + 1 :]
    with pytest.raises(UnreadableValue, match="altered"):
        c.open(tampered, ROW)


def test_a_truncated_envelope_is_refused() -> None:
    c = cipher()
    with pytest.raises(UnreadableValue):
        c.open(c.seal(SECRET, ROW)[:-30], ROW)
    with pytest.raises(UnreadableValue):
        c.open(ENVELOPE_PREFIX + "k1.", ROW)


def test_a_ciphertext_moved_to_another_row_or_column_is_refused() -> None:
    c = cipher()
    stored = c.seal(SECRET, ROW)
    with pytest.raises(UnreadableValue, match="another cell"):
        c.open(stored, cell("applications.signing_secret", "app_2"))
    with pytest.raises(UnreadableValue):
        c.open(stored, cell("applications.auth_header_value", "app_1"))
    # Length-prefixed parts: ("a", "bc") and ("ab", "c") are different cells.
    assert cell("t.c", "a", "bc") != cell("t.c", "ab", "c")


def test_legacy_plain_text_is_read_as_is() -> None:
    for value in (SECRET, '{"a":1}', "Bearer xyz", "", None):
        assert cipher().open(value, ROW) == value
        assert PLAIN.open(value, ROW) == value
        assert not is_sealed(value)


def test_switches_decide_what_is_written() -> None:
    ring = keyring()
    off = ColumnCipher(ring, secrets=False, payloads=False)
    assert off.seal_secret(SECRET, ROW) == SECRET and off.seal_payload("{}", ROW) == "{}"
    secrets_only = ColumnCipher(ring, secrets=True, payloads=False)
    assert is_sealed(secrets_only.seal_secret(SECRET, ROW))
    assert secrets_only.seal_payload("{}", ROW) == "{}"
    # Nothing to hide in an absent or empty secret.
    assert secrets_only.seal_secret(None, ROW) is None
    assert secrets_only.seal_secret("", ROW) == ""
    with pytest.raises(EncryptionError):
        ColumnCipher(None, secrets=True, payloads=False)


def test_rotation_old_keys_decrypt_the_primary_encrypts() -> None:
    old = cipher("k1", k1=K1).seal(SECRET, ROW)
    rotated = cipher("k2", k1=K1, k2=K2)
    assert rotated.open(old, ROW) == SECRET
    assert key_id_of(rotated.seal(SECRET, ROW)) == "k2"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "not valid JSON"),
        ('{"primary": "k1"}', "must be"),
        (json.dumps({"primary": "k9", "keys": {"k1": K1}}), "primary"),
        (json.dumps({"primary": "k1", "keys": {"k1": "%%%"}}), "not base64"),
        (
            json.dumps({"primary": "k1", "keys": {"k1": base64.b64encode(b"short").decode()}}),
            "32 bytes",
        ),
        (json.dumps({"primary": "a.b", "keys": {"a.b": K1}}), "bad key id"),
    ],
)
def test_a_bad_keyring_is_refused_without_showing_keys(text: str, error: str) -> None:
    with pytest.raises(EncryptionError, match=error) as caught:
        Keyring.parse(text)
    assert K1 not in str(caught.value)


def test_settings_read_the_keyring_from_env_or_file(tmp_path: Path) -> None:
    text = json.dumps({"primary": "k1", "keys": {"k1": K1}})
    from_env = EncryptionSettings(keyring=text, enabled=True).cipher()
    assert from_env.primary == "k1" and from_env.secrets and not from_env.payloads
    path = tmp_path / "keyring.json"
    path.write_text(text)
    from_file = EncryptionSettings(keyring_file=str(path), enabled=True, payloads=True).cipher()
    assert from_file.open(from_env.seal(SECRET, ROW), ROW) == SECRET
    assert from_file.payloads


def test_settings_without_keys_read_plain_text_only() -> None:
    plain = EncryptionSettings().cipher()
    assert plain.primary is None and not plain.secrets
    assert plain.seal_secret(SECRET, ROW) == SECRET


@pytest.mark.parametrize(
    "kwargs",
    [
        {"enabled": True},
        {"payloads": True},
        {"keyring": "{}", "keyring_file": "x"},
        {"keyring_file": "/nonexistent/keyring.json"},
    ],
)
def test_settings_refuse_what_cannot_work(kwargs: dict[str, object]) -> None:
    with pytest.raises(EncryptionError):
        EncryptionSettings(**kwargs).cipher()  # type: ignore[arg-type]


def test_a_payloads_associated_data_is_computed_only_when_it_is_sealed_or_opened() -> None:
    computed: list[str] = []

    def row_cell() -> bytes:
        computed.append("cell")
        return ROW

    assert PLAIN.seal_payload("{}", row_cell) == "{}"
    assert PLAIN.open("{}", row_cell) == "{}"
    assert computed == []  # plain text: no cell computed on the hot paths
    c = cipher()
    stored = c.seal_payload("{}", row_cell)
    assert c.open(stored, row_cell) == "{}" and c.open(stored, ROW) == "{}"
    assert computed == ["cell", "cell"]
