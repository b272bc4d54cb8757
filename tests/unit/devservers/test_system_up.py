"""`make up` restarts a service that runs but stays not ready (a wedged process used to be
waited for until `up` failed), leaves a ready one alone, and starts a dead one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "devservers"))
import system

pytestmark = pytest.mark.unit
SERVICE = system.Service("wedged", "scheduler-wedged", "WEDGED_PORT")
ENV = {"WEDGED_PORT": "1"}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(system, "STATE", tmp_path)
    monkeypatch.setattr(system, "NOT_READY_GRACE_S", 0.3)
    monkeypatch.setattr(system, "STOP_GRACE_S", 5.0)
    started: list[str] = []
    monkeypatch.setattr(system, "start", lambda service, env: started.append(service.name))
    SERVICE.pidfile.parent.mkdir(parents=True)
    return started


def _running() -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    SERVICE.pidfile.write_text(f"{process.pid}\n")
    return process


def test_a_running_service_that_stays_not_ready_is_stopped_and_started_again(
    world: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system, "probe", lambda url: (False, "wedged"))
    process = _running()
    assert system.ensure_started(SERVICE, ENV) is True
    assert process.wait(timeout=10) is not None  # stopped
    assert world == ["wedged"]


def test_a_ready_service_is_left_alone(world: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "probe", lambda url: (True, "ok"))
    process = _running()
    try:
        assert system.ensure_started(SERVICE, ENV) is False
        assert process.poll() is None and world == []
    finally:
        process.kill()
        process.wait()


def test_a_dead_service_is_started(world: list[str]) -> None:
    assert system.ensure_started(SERVICE, ENV) is True
    assert world == ["wedged"]
