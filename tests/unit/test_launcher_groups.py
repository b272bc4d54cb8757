"""The process launcher (scheduler.testing.processes) gives each launched system consumer groups
of its own: two systems on one broker, or a test run beside `make up`, never join each other's
groups (a shared group rebalances both and hands one system's records to the other).

Every setting the services read that names a consumer group or a transactional id is found by
its field name, so a group setting added later is covered too."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.testing.processes import group_env, service_env
from tests.unit.deploy.support import SETTINGS_CLASSES, load

pytestmark = pytest.mark.unit


def group_settings() -> Iterator[tuple[Any, str]]:
    for target in SETTINGS_CLASSES:
        cls = load(target)
        for name in cls.model_fields:
            if "group" in name or "transactional" in name:
                yield cls, name


def read(cls: Any, field: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The value the service would read in a process with environment `env`."""
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("SCHEDULER_")]:
            m.delenv(key)
        for key, value in env.items():
            if key.startswith("SCHEDULER_"):
                m.setenv(key, value)
        return getattr(cls(), field)


def launcher_env(prefix: str) -> dict[str, str]:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9092", topic_prefix=prefix)
    return service_env(kafka, CassandraSettings(), SchedulingSettings(), {})


def test_the_group_settings_are_found() -> None:
    found = {(cls.__name__, name) for cls, name in group_settings()}
    assert {("BucketerSettings", "group_id"), ("ReleaseSettings", "bucketer_group_id")} <= found


def test_two_launched_systems_and_the_defaults_share_no_group(monkeypatch) -> None:
    a, b = launcher_env("t-aaaa."), launcher_env("t-bbbb.")
    for cls, field in group_settings():
        values = {
            "default (make up)": read(cls, field, {}, monkeypatch),
            "system a": read(cls, field, a, monkeypatch),
            "system b": read(cls, field, b, monkeypatch),
        }
        assert len(set(values.values())) == 3, f"{cls.__name__}.{field}: {values}"


def test_the_releaser_watches_the_bucketer_group_it_runs_beside(monkeypatch) -> None:
    env = launcher_env("t-cccc.")
    bucketer = load("scheduler_bucketer.settings:BucketerSettings")
    release = load("scheduler_releaser.settings:ReleaseSettings")
    assert read(release, "bucketer_group_id", env, monkeypatch) == read(
        bucketer, "group_id", env, monkeypatch
    )


def test_an_empty_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="topic prefix"):
        group_env("")
