"""A schedule's flexible window in the console: typed in minutes, stored as flexibleWindowMs,
shown on the schedule's page; 0 or empty is none."""

from __future__ import annotations

import html

import pytest

from tests.unit.ingest.console.browser import Browser
from tests.unit.ingest.console.test_schedule_pages import FORM, create
from tests.unit.ingest.harness import Harness

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("typed", "stored", "shown"),
    [
        ("15", 900_000, "15 min (900,000 ms)"),
        ("2.5", 150_000, "2.5 min (150,000 ms)"),
        ("1440", 86_400_000, "1,440 min (86,400,000 ms)"),
        ("0", None, "none"),
        ("", None, "none"),
    ],
)
def test_the_flexible_window_round_trips(
    h: Harness, alice: Browser, typed: str, stored: int | None, shown: str
) -> None:
    form = alice.get(f"/apps/{h.alice.app_id}/schedules/new").text
    assert 'name="flexible_window"' in form and "minutes" in form
    schedule_id = create(h, alice, flexible_window=typed)
    found = h.schedules.get(h.alice.app_id, schedule_id)
    assert found is not None and found.flexible_window_ms == stored
    page = html.unescape(alice.get(f"/apps/{h.alice.app_id}/schedules/{schedule_id}").text)
    assert f"<dt>Flexible window</dt><dd>{shown}</dd>" in page
    # The API reads the same schedule with the same window.
    api = h.client.get(f"/schedules/{schedule_id}", headers=h.alice.data).json()
    assert api["flexibleWindowMs"] == (stored or 0)


@pytest.mark.parametrize("typed", ["1441", "ten", "-5", "1e3", "0.5.1"])
def test_a_window_out_of_bounds_is_refused_with_what_was_typed(
    h: Harness, alice: Browser, typed: str
) -> None:
    alice.get(f"/apps/{h.alice.app_id}/schedules/new")
    r = alice.post(f"/apps/{h.alice.app_id}/schedules/new", {**FORM, "flexible_window": typed})
    assert r.status_code == 400
    assert "Flexible window: minutes from 0 to 1,440 (a day)" in html.unescape(r.text)
    assert f'name="flexible_window" value="{html.escape(typed)}"' in r.text
    assert list(h.schedules.scan_timings()) == []
