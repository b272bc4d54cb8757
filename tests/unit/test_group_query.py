"""The writer-group query runs in a child process (scheduler.kafka.groups): librdkafka's abort
on a coordinator request that loses its connection must cost the asker one failed query, not
its life. The child here is a stand-in that aborts, hangs or fails the way a real one can."""

from __future__ import annotations

import sys

import pytest

from scheduler.kafka import groups
from scheduler.kafka.groups import GroupQueryFailed, describe_groups_in_child
from scheduler.settings import KafkaSettings

pytestmark = pytest.mark.unit

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", sasl_password="hunter2")


def child(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(groups, "CHILD_COMMAND", [sys.executable, "-c", code])


def test_a_child_that_aborts_fails_the_query_and_the_asker_lives_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what librdkafka's failed assertion does: SIGABRT (run in-process, it ends pytest here)
    child(monkeypatch, "import os; os.abort()")
    with pytest.raises(GroupQueryFailed, match="exited with -6"):
        describe_groups_in_child(KAFKA, ["g"])


def test_a_child_that_hangs_is_killed_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    child(monkeypatch, "import time; time.sleep(60)")
    monkeypatch.setattr(groups, "CHILD_STARTUP_ALLOWANCE_S", 0.0)
    with pytest.raises(GroupQueryFailed, match="no answer"):
        describe_groups_in_child(KAFKA, ["g"], timeout_s=0.5)


def test_a_failing_child_names_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    child(monkeypatch, "raise SystemExit('KafkaException: _TRANSPORT')")
    with pytest.raises(GroupQueryFailed, match="exited with 1: KafkaException: _TRANSPORT"):
        describe_groups_in_child(KAFKA, ["g"])


def test_the_child_gets_the_settings_secrets_on_stdin_not_in_its_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # echoes what it was given: the request on stdin, its arguments in place of a member
    child(
        monkeypatch,
        "import json, sys; r = json.load(sys.stdin);"
        " print(json.dumps({'g': [[r['kafka']['sasl_password'], ' '.join(sys.argv)]]}))",
    )
    members = describe_groups_in_child(KAFKA, ["g"])
    [member] = members["g"]
    assert member.client_id == "hunter2"
    assert "hunter2" not in member.host
