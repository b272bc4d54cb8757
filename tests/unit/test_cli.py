"""The operator command line without servers: `admin list-apps` on an in-memory app store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from scheduler import cli
from scheduler.store.apps import AppStore, InMemoryAppStore
from scheduler.store.ports import Application

pytestmark = pytest.mark.unit

APP = Application(
    app_id="app_1", owner_id="alice", name="hooks", type="REST", endpoint="https://e.example/h"
)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> InMemoryAppStore:
    apps = InMemoryAppStore()

    @contextmanager
    def app_store() -> Iterator[AppStore]:
        yield apps

    monkeypatch.setattr(cli, "_app_store", app_store)
    return apps


def _list_apps(capsys: pytest.CaptureFixture[str], owner: str) -> tuple[int, str, str]:
    code = cli.main(["admin", "list-apps", "--owner", owner])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_apps_of_an_unknown_owner_says_so(
    store: InMemoryAppStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.ensure_owner("alice", 0)
    code, out, err = _list_apps(capsys, "Alice")
    assert (code, out) == (1, "")
    assert "no owner 'Alice'" in err and "list-owners" in err


def test_list_apps_of_an_owner_without_applications_says_so(
    store: InMemoryAppStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.ensure_owner("alice", 0)
    code, out, err = _list_apps(capsys, "alice")
    assert (code, out) == (0, "")
    assert err.strip() == "owner 'alice' has no applications"
    store.put_app(replace(APP, deleted_ms=5))
    code, out, err = _list_apps(capsys, "alice")
    assert (code, out, err.strip()) == (0, "", "owner 'alice' has no applications (1 deleted)")


def test_list_apps_prints_one_line_per_application_and_nothing_else(
    store: InMemoryAppStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.ensure_owner("alice", 0)
    store.put_app(APP)
    code, out, err = _list_apps(capsys, "alice")
    assert (code, out, err) == (0, "app_1\tREST\thooks\thttps://e.example/h\n", "")
