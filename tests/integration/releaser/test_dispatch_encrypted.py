"""The dispatcher on stores encrypted at rest (the wiring the services use): the webhook carries
the plain auth header and a signature made with the plain secret, never the ciphertext."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from scheduler.domain.status import Status
from scheduler.encryption import ColumnCipher, Keyring, is_sealed, new_key
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.rest import HEADER_SIGNATURE, HEADER_TIMESTAMP
from scheduler_releaser.dispatcher.signing import verify
from scheduler_releaser.wiring import cassandra_stores

from .conftest import CLOCK, Env, Receiver, RunningDispatcher, eventually
from .test_dispatch import SETTINGS, due_message

pytestmark = pytest.mark.integration

CIPHER = ColumnCipher(
    Keyring.parse(json.dumps({"primary": "k1", "keys": {"k1": new_key()}})),
    secrets=True,
    payloads=True,
)


def test_an_encrypted_app_is_delivered_with_its_plain_header_and_signature(
    env: Env, receiver: Receiver
) -> None:
    cluster, _, stores = cassandra_stores(env.cassandra, CIPHER)
    try:
        encrypted = dataclasses.replace(env, stores=stores, app_store=stores.apps)
        encrypted.releaser_is_current()
        encrypted.add_app(
            Application(
                app_id="sealed",
                owner_id="owner",
                name="sealed",
                type="REST",
                endpoint=receiver.url("/ok"),
                auth_header_name="Authorization",
                auth_header_value="Bearer plain-token",
                signing_secret="whsec_plain_secret",
            )
        )
        row = env.session.execute(
            "SELECT signing_secret, auth_header_value FROM applications WHERE app_id = 'sealed'"
        ).one()
        assert is_sealed(row.signing_secret) and is_sealed(row.auth_header_value)
        m = due_message("sealed", CLOCK.now_ms() + 500, payload='{"secret": "payload"}')
        encrypted.schedule(m)
        encrypted.flush()
        stored = env.session.execute(
            "SELECT payload_json FROM messages WHERE app_id = 'sealed' AND message_id = %s",
            (m.message_id,),
        ).one()
        assert is_sealed(stored.payload_json)

        def sent() -> bool:
            view = stores.messages.get("sealed", m.message_id)
            return view is not None and view.state.status is Status.SENT

        async def scenario() -> None:
            async with RunningDispatcher(encrypted, SETTINGS):
                await eventually(sent)

        asyncio.run(scenario())
    finally:
        cluster.shutdown()
    [delivery] = receiver.received
    assert delivery.headers["authorization"] == "Bearer plain-token"
    timestamp = int(delivery.headers[HEADER_TIMESTAMP.lower()])
    assert verify(
        "whsec_plain_secret", timestamp, delivery.body, delivery.headers[HEADER_SIGNATURE.lower()]
    )
    assert json.loads(delivery.body) == {"payload": {"secret": "payload"}}
