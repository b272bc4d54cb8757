"""The chart's encryption values: the keyring Secret and the switches reach every Deployment."""

from __future__ import annotations

from typing import Any

import pytest

from .support import render_chart

pytestmark = [pytest.mark.unit, pytest.mark.tools]


def _env(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {
        o["metadata"]["name"]: [
            e
            for c in o["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", [])
            if e["name"].startswith("SCHEDULER_ENCRYPTION_")
        ]
        for o in objects
        if o["kind"] == "Deployment"
    }


def test_without_a_keyring_secret_nothing_changes() -> None:
    assert all(env == [] for env in _env(render_chart()).values())


def test_every_deployment_gets_the_keyring_and_the_switches() -> None:
    objects = render_chart(
        "encryption.keyringSecret=scheduler-keyring",
        "encryption.enabled=true",
        "dispatcher.instances=2",
    )
    by_deployment = _env(objects)
    assert len(by_deployment) == 5  # ingest, bucketer, releaser, dispatcher-0, dispatcher-1
    for name, env in by_deployment.items():
        assert env == [
            {
                "name": "SCHEDULER_ENCRYPTION_KEYRING",
                "valueFrom": {"secretKeyRef": {"name": "scheduler-keyring", "key": "keyring.json"}},
            },
            {"name": "SCHEDULER_ENCRYPTION_ENABLED", "value": "true"},
            {"name": "SCHEDULER_ENCRYPTION_PAYLOADS", "value": "false"},
        ], name
