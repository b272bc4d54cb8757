"""docs/WEBHOOKS.md: its Python verifier (extracted from the markdown and run) and its openssl
recipe accept what the dispatcher's signing.py produces, and refuse the key forms that do not
work; devservers/webhook_receiver.py carries the same verifier."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from scheduler.security import new_signing_secret
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.signing import sign, signature_header

from .markdown import ROOT, blocks

pytestmark = pytest.mark.unit

DOC = "docs/WEBHOOKS.md"
NOW = 1_893_499_200_004
BODY = '{"payload":{"orderId":42,"note":"caf\u00e9 \u2615"}}'.encode()

Verifier = Callable[..., bool]


def _doc_verifier_code() -> str:
    [code] = [b.code for b in blocks(DOC, "python") if "def verify_webhook" in b.code]
    return code


@pytest.fixture(scope="module")
def verify() -> Verifier:
    namespace: dict[str, Any] = {}
    exec(compile(_doc_verifier_code(), DOC, "exec"), namespace)
    return namespace["verify_webhook"]  # type: ignore[no-any-return]


def _app(secret: str, previous: str | None = None, until: int | None = None) -> Application:
    return Application(
        app_id="app-1",
        owner_id="o",
        name="n",
        type="REST",
        endpoint="https://example.com/hook",
        signing_secret=secret,
        created_ms=0,
        updated_ms=0,
        previous_signing_secret=previous,
        previous_secret_valid_until_ms=until,
    )


def test_the_whole_secret_as_utf8_verifies(verify: Verifier) -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    header = signature_header(_app(secret), NOW, BODY)
    assert verify(secret, str(NOW), header, BODY, now_ms=NOW)


def test_the_key_forms_that_do_not_work_are_refused(verify: Verifier) -> None:
    secret = new_signing_secret()
    header = signature_header(_app(secret), NOW, BODY)
    bare = secret.removeprefix("whsec_")
    decoded = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)).decode("latin-1")
    for wrong in (bare, decoded, secret + "\n"):
        assert not verify(wrong, str(NOW), header, BODY, now_ms=NOW), wrong


def test_a_changed_body_or_timestamp_is_refused(verify: Verifier) -> None:
    secret = new_signing_secret()
    header = signature_header(_app(secret), NOW, BODY)
    assert not verify(secret, str(NOW), header, BODY.replace(b"42", b"43"), now_ms=NOW)
    assert not verify(secret, str(NOW + 1), header, BODY, now_ms=NOW)
    assert not verify(secret, "not-a-number", header, BODY, now_ms=NOW)


def test_the_replay_window_is_five_minutes_either_way(verify: Verifier) -> None:
    secret = new_signing_secret()
    header = signature_header(_app(secret), NOW, BODY)
    five_min = 5 * 60 * 1000
    assert verify(secret, str(NOW), header, BODY, now_ms=NOW + five_min)
    assert verify(secret, str(NOW), header, BODY, now_ms=NOW - five_min)
    assert not verify(secret, str(NOW), header, BODY, now_ms=NOW + five_min + 1)
    assert not verify(secret, str(NOW), header, BODY, now_ms=NOW - five_min - 1)


def test_during_a_rotation_either_secret_verifies_and_after_it_only_the_new_one(
    verify: Verifier,
) -> None:
    old, new = new_signing_secret(), new_signing_secret()
    app = _app(new, previous=old, until=NOW + 1)
    header = signature_header(app, NOW, BODY)
    assert header.count("v1=") == 2 and header.split()[0] == sign(new, NOW, BODY)
    assert verify(new, str(NOW), header, BODY, now_ms=NOW)
    assert verify(old, str(NOW), header, BODY, now_ms=NOW)
    later = NOW + 1
    header_after = signature_header(app, later, BODY)
    assert header_after.count("v1=") == 1
    assert verify(new, str(later), header_after, BODY, now_ms=later)
    assert not verify(old, str(later), header_after, BODY, now_ms=later)


def test_the_doc_states_the_headers_the_dispatcher_sends() -> None:
    from scheduler_releaser.dispatcher import rest

    text = (ROOT / DOC).read_text(encoding="utf-8")
    for name in (
        rest.HEADER_MESSAGE_ID,
        rest.HEADER_DUE,
        rest.HEADER_ATTEMPT,
        rest.HEADER_TIMESTAMP,
        rest.HEADER_SIGNATURE,
    ):
        assert f"`{name}`" in text, name


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_openssl_recipe_agrees_with_signing_py(tmp_path: Path) -> None:
    [recipe] = [b.code for b in blocks(DOC, "bash") if "openssl dgst" in b.code]
    secret = new_signing_secret()
    (tmp_path / "body.json").write_bytes(BODY)
    for key, expected in ((secret, "signature ok"), ("whsec_wrong", "does NOT match")):
        env = {
            **os.environ,
            "SECRET": key,
            "TS": str(NOW),
            "SIG": signature_header(_app(secret), NOW, BODY),
        }
        out = subprocess.run(
            ["bash", "-c", recipe], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0 and expected in out.stdout, (out.stdout, out.stderr)


def _receiver_module() -> ModuleType:
    path = ROOT / "devservers" / "webhook_receiver.py"
    spec = importlib.util.spec_from_file_location("webhook_receiver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function_source(code: str) -> str:
    """From `TOLERANCE_MS = ` to the end of `verify_webhook`, without noqa comments."""
    last = "for part in signature_header.split())"
    text = code[code.index("TOLERANCE_MS = ") : code.index(last) + len(last)]
    return re.sub(r"  # noqa: \w+", "", text)


def test_the_receiver_script_has_the_verifier_of_the_doc() -> None:
    script = (ROOT / "devservers" / "webhook_receiver.py").read_text(encoding="utf-8")
    assert _function_source(script) == _function_source(_doc_verifier_code())


@pytest.fixture
def receiver() -> Iterator[tuple[str, str]]:
    from http.server import ThreadingHTTPServer

    secret = new_signing_secret()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _receiver_module().handler(secret))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", secret
    server.shutdown()
    server.server_close()


def test_the_receiver_script_accepts_a_signed_delivery_and_refuses_a_forged_one(
    receiver: tuple[str, str],
) -> None:
    from scheduler.clock import SystemClock

    url, secret = receiver
    now = SystemClock().now_ms()
    headers = {
        "Content-Type": "application/json",
        "X-Scheduler-Timestamp": str(now),
        "X-Scheduler-Signature": signature_header(_app(secret), now, BODY),
    }
    assert httpx.post(url, content=BODY, headers=headers).status_code == 200
    forged = {**headers, "X-Scheduler-Signature": sign("whsec_other", now, BODY)}
    assert httpx.post(url, content=BODY, headers=forged).status_code == 401
