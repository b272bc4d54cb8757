"""The DST rule of recurring cron schedules across real transitions, and leap days.

The rule (scheduler.domain.recurrence): a matching local time fires once, at the first instant at
which the zone's clock shows that time or a later one. Expected instants are written as RFC 3339
with the offset in force, so each one says which side of a transition it is on; the first test
checks that the transitions are where these tests assume (a tzdata change would show there).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime

import pytest

from scheduler.domain.recurrence import Recurrence, load_zone
from scheduler.domain.sendat import parse_rfc3339_ms

pytestmark = pytest.mark.unit

BERLIN, NEW_YORK, LORD_HOWE = "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"
FAR = 10**15  # "until the end of time" for occurrences_between (clipped to year 9999)


def at(text: str) -> int:
    """Epoch ms of RFC 3339, seconds optional ('2027-03-28T03:00+02:00')."""
    return parse_rfc3339_ms(re.sub(r"T(\d\d:\d\d)(?=[Z+-])", r"T\1:00", text))


def local(ms: int, zone: str) -> str:
    """An instant as the zone's clock shows it, with the offset: '2027-03-28T03:00+02:00'."""
    moment = datetime.fromtimestamp(ms / 1000, load_zone(zone))
    text = moment.strftime("%Y-%m-%dT%H:%M%z")
    return text[:-2] + ":" + text[-2:]


def fires(expression: str, zone: str, after: str, count: int) -> list[str]:
    recurrence = Recurrence(expression, zone)
    return [local(t, zone) for t in recurrence.occurrences_between(at(after), FAR, count)]


def fires_between(expression: str, zone: str, after: str, until: str) -> list[str]:
    recurrence = Recurrence(expression, zone)
    return [local(t, zone) for t in recurrence.occurrences_between(at(after), at(until), 10_000)]


@pytest.mark.parametrize(
    ("zone", "before", "after", "offsets"),
    [
        (BERLIN, "2027-03-28T00:59:59Z", "2027-03-28T01:00:00Z", ("+0100", "+0200")),
        (BERLIN, "2027-10-31T00:59:59Z", "2027-10-31T01:00:00Z", ("+0200", "+0100")),
        (NEW_YORK, "2027-03-14T06:59:59Z", "2027-03-14T07:00:00Z", ("-0500", "-0400")),
        (NEW_YORK, "2027-11-07T05:59:59Z", "2027-11-07T06:00:00Z", ("-0400", "-0500")),
        (LORD_HOWE, "2027-04-03T14:59:59Z", "2027-04-03T15:00:00Z", ("+1100", "+1030")),
        (LORD_HOWE, "2027-10-02T15:29:59Z", "2027-10-02T15:30:00Z", ("+1030", "+1100")),
    ],
)
def test_the_transitions_are_where_these_tests_assume(
    zone: str, before: str, after: str, offsets: tuple[str, str]
) -> None:
    tz = load_zone(zone)
    assert datetime.fromtimestamp(at(before) / 1000, tz).strftime("%z") == offsets[0]
    assert datetime.fromtimestamp(at(after) / 1000, tz).strftime("%z") == offsets[1]


# --- gaps: a local time that does not exist fires at the first instant after the gap -----------


def test_berlin_spring_a_daily_time_in_the_gap_fires_when_the_clocks_jump() -> None:
    assert fires("30 2 * * *", BERLIN, "2027-03-26T12:00:00Z", 4) == [
        "2027-03-27T02:30+01:00",
        "2027-03-28T03:00+02:00",  # 02:30 does not exist that day: 01:00Z, the jump
        "2027-03-29T02:30+02:00",
        "2027-03-30T02:30+02:00",
    ]


@pytest.mark.parametrize("expression", ["*/15 2 * * *", "0/15 2 * * *", "0,15,30,45 2 * * *"])
def test_berlin_spring_stepped_fields_follow_the_same_rule(expression: str) -> None:
    # cronsim on its own treats "*/15 2" (nothing that day) and "0/15 2" (03:00) differently
    assert fires(expression, BERLIN, "2027-03-27T12:00:00Z", 3) == [
        "2027-03-28T03:00+02:00",  # 02:00, 02:15, 02:30, 02:45 all fire together, once
        "2027-03-29T02:00+02:00",
        "2027-03-29T02:15+02:00",
    ]


def test_berlin_spring_every_quarter_hour_merges_the_gap_into_one_occurrence() -> None:
    assert fires_between(
        "*/15 * * * *", BERLIN, "2027-03-28T01:15+01:00", "2027-03-28T03:30+02:00"
    ) == [
        "2027-03-28T01:30+01:00",
        "2027-03-28T01:45+01:00",
        "2027-03-28T03:00+02:00",  # 02:00 .. 02:45 and 03:00 itself
        "2027-03-28T03:15+02:00",
        "2027-03-28T03:30+02:00",
    ]


def test_berlin_spring_an_hourly_minute_in_the_gap_fires_at_the_jump_and_again_after() -> None:
    assert fires("5 * * * *", BERLIN, "2027-03-28T00:30+01:00", 4) == [
        "2027-03-28T01:05+01:00",
        "2027-03-28T03:00+02:00",  # 02:05 does not exist
        "2027-03-28T03:05+02:00",
        "2027-03-28T04:05+02:00",
    ]


def test_new_york_spring_times_in_the_gap_fire_at_three() -> None:
    assert fires("30 2 * * *", NEW_YORK, "2027-03-13T00:00-05:00", 3) == [
        "2027-03-13T02:30-05:00",
        "2027-03-14T03:00-04:00",
        "2027-03-15T02:30-04:00",
    ]
    assert fires("0 2 * * *", NEW_YORK, "2027-03-14T00:00-05:00", 1) == ["2027-03-14T03:00-04:00"]


def test_lord_howe_spring_half_hour_gap() -> None:
    # 2027-10-03 02:00 +10:30 -> 02:30 +11:00: the gap is half an hour
    assert fires("15 2 * * *", LORD_HOWE, "2027-10-02T12:00+10:30", 2) == [
        "2027-10-03T02:30+11:00",
        "2027-10-04T02:15+11:00",
    ]
    assert fires_between(
        "*/20 * * * *", LORD_HOWE, "2027-10-03T01:30+10:30", "2027-10-03T03:00+11:00"
    ) == [
        "2027-10-03T01:40+10:30",
        "2027-10-03T02:30+11:00",  # 02:00 and 02:20 do not exist; 02:30 does not match */20
        "2027-10-03T02:40+11:00",
        "2027-10-03T03:00+11:00",
    ]
    assert fires_between(
        "*/15 * * * *", LORD_HOWE, "2027-10-03T01:30+10:30", "2027-10-03T03:00+11:00"
    ) == [
        "2027-10-03T01:45+10:30",
        "2027-10-03T02:30+11:00",  # 02:00, 02:15 and 02:30 itself
        "2027-10-03T02:45+11:00",
        "2027-10-03T03:00+11:00",
    ]


# --- overlaps: a local time that happens twice fires once, at its first occurrence ------------


def test_berlin_autumn_a_daily_time_in_the_repeated_hour_fires_once() -> None:
    assert fires("30 2 * * *", BERLIN, "2027-10-30T12:00:00Z", 3) == [
        "2027-10-31T02:30+02:00",  # 00:30Z; not again at 01:30Z
        "2027-11-01T02:30+01:00",
        "2027-11-02T02:30+01:00",
    ]


def test_berlin_autumn_stepped_minutes_fire_in_the_first_pass_only() -> None:
    assert fires_between(
        "*/15 * * * *", BERLIN, "2027-10-31T01:40+02:00", "2027-10-31T03:15+01:00"
    ) == [
        "2027-10-31T01:45+02:00",
        "2027-10-31T02:00+02:00",
        "2027-10-31T02:15+02:00",
        "2027-10-31T02:30+02:00",
        "2027-10-31T02:45+02:00",
        # the second pass, 02:00+01:00 .. 02:59+01:00, is silent: those times already fired
        "2027-10-31T03:00+01:00",
        "2027-10-31T03:15+01:00",
    ]
    assert fires_between(
        "*/15 2 * * *", BERLIN, "2027-10-31T00:00+02:00", "2027-10-31T12:00+01:00"
    ) == [
        "2027-10-31T02:00+02:00",
        "2027-10-31T02:15+02:00",
        "2027-10-31T02:30+02:00",
        "2027-10-31T02:45+02:00",
    ]


def test_from_inside_the_second_pass_the_next_occurrence_is_after_the_repeated_hour() -> None:
    recurrence = Recurrence("*/15 * * * *", BERLIN)
    second_pass = at("2027-10-31T02:20+01:00")
    assert local(recurrence.next_occurrence(second_pass) or 0, BERLIN) == "2027-10-31T03:00+01:00"
    # and walking back from there finds the first pass, which is before it
    back = list(itertools.islice(recurrence._backward(second_pass, 0), 2))
    assert [local(t, BERLIN) for t in back] == ["2027-10-31T02:45+02:00", "2027-10-31T02:30+02:00"]


def test_new_york_autumn_the_repeated_hour_fires_once() -> None:
    assert fires("30 1 * * *", NEW_YORK, "2027-11-06T12:00:00Z", 2) == [
        "2027-11-07T01:30-04:00",
        "2027-11-08T01:30-05:00",
    ]
    assert fires_between(
        "*/30 * * * *", NEW_YORK, "2027-11-07T00:15-04:00", "2027-11-07T02:30-05:00"
    ) == [
        "2027-11-07T00:30-04:00",
        "2027-11-07T01:00-04:00",
        "2027-11-07T01:30-04:00",
        "2027-11-07T02:00-05:00",  # an hour and a half after 01:30-04:00
        "2027-11-07T02:30-05:00",
    ]


def test_lord_howe_autumn_half_hour_overlap() -> None:
    # 2027-04-04 02:00 +11:00 -> 01:30 +10:30: 01:30 .. 01:59 happen twice
    assert fires("45 1 * * *", LORD_HOWE, "2027-04-03T12:00+11:00", 2) == [
        "2027-04-04T01:45+11:00",
        "2027-04-05T01:45+10:30",
    ]
    assert fires_between(
        "*/15 * * * *", LORD_HOWE, "2027-04-04T01:00+11:00", "2027-04-04T02:30+10:30"
    ) == [
        "2027-04-04T01:15+11:00",
        "2027-04-04T01:30+11:00",
        "2027-04-04T01:45+11:00",
        "2027-04-04T02:00+10:30",  # 45 minutes after 01:45+11:00: the repeated half hour is silent
        "2027-04-04T02:15+10:30",
        "2027-04-04T02:30+10:30",
    ]


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        (BERLIN, "2027-03-27", 96),
        (BERLIN, "2027-03-28", 92),  # 23 hours: the gap's 4 quarters and 03:00 are one occurrence
        (BERLIN, "2027-10-31", 96),  # 25 hours, still one occurrence per local quarter hour
        (NEW_YORK, "2027-03-14", 92),
        (NEW_YORK, "2027-11-07", 96),
        (LORD_HOWE, "2027-10-03", 94),  # half an hour gap: 02:00, 02:15 merge into 02:30
        (LORD_HOWE, "2027-04-04", 96),
    ],
)
def test_occurrences_per_local_day(zone: str, day: str, expected: int) -> None:
    tz = load_zone(zone)
    start = datetime.fromisoformat(day).replace(tzinfo=tz)
    end = datetime.fromisoformat(day).replace(tzinfo=tz) + (
        datetime.fromisoformat("2000-01-02") - datetime.fromisoformat("2000-01-01")
    )
    # local midnight to local midnight (wall-clock day), whatever its length
    after_ms = int(start.timestamp() * 1000) - 1
    until_ms = int(end.timestamp() * 1000) - 1
    times = Recurrence("*/15 * * * *", zone).occurrences_between(after_ms, until_ms, 1000)
    assert len(times) == expected
    assert all(b > a for a, b in itertools.pairwise(times))


TRANSITIONS = [
    (BERLIN, "2027-03-28"),
    (BERLIN, "2027-10-31"),
    (NEW_YORK, "2027-03-14"),
    (NEW_YORK, "2027-11-07"),
    (LORD_HOWE, "2027-04-04"),
    (LORD_HOWE, "2027-10-03"),
]


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
@pytest.mark.parametrize(
    "expression", ["*/15 * * * *", "30 2 * * *", "*/20 1-3 * * *", "@hourly", "45 1 * * *"]
)
def test_walking_back_finds_what_walking_forward_finds(
    zone: str, expression: str, day: str
) -> None:
    # the catch-up walks backwards: across each transition it must agree with the forward walk
    recurrence = Recurrence(expression, zone)
    after = at(day + "T00:00:00Z") - 86_400_000
    until = after + 3 * 86_400_000
    forward = recurrence.occurrences_between(after, until, 100_000)
    backward = list(recurrence._backward(until, after))
    assert backward == forward[::-1]
    # from any instant in the window, including inside gaps and second passes
    for probe in range(after, until, 60_000 * 7 + 1_001):
        expected = next((t for t in forward if t > probe), None)
        if expected is not None:
            assert recurrence.next_occurrence(probe) == expected


# --- leap days -----------------------------------------------------------------------------


def test_february_29_fires_in_leap_years_only() -> None:
    assert fires("0 0 29 2 *", "UTC", "2027-01-01T00:00:00Z", 3) == [
        "2028-02-29T00:00+00:00",
        "2032-02-29T00:00+00:00",
        "2036-02-29T00:00+00:00",
    ]
    # 2100 is not a leap year: eight years between two occurrences
    assert fires("0 0 29 2 *", BERLIN, "2096-03-01T00:00:00Z", 1) == ["2104-02-29T00:00+01:00"]


def test_a_yearly_schedule_started_on_february_29() -> None:
    start = at("2028-02-29T12:00:00+01:00")
    # "the 29th of February": only leap years, never moved to the 28th or March 1st
    on_the_day = Recurrence("0 12 29 2 *", BERLIN, start_ms=start)
    assert [local(t, BERLIN) for t in on_the_day.occurrences_between(0, FAR, 2)] == [
        "2028-02-29T12:00+01:00",
        "2032-02-29T12:00+01:00",
    ]
    # the last day of February every year (cronsim's L): what "yearly from Feb 29" usually means
    last_day = Recurrence("0 12 L 2 *", BERLIN, start_ms=start)
    assert [local(t, BERLIN) for t in last_day.occurrences_between(0, FAR, 5)] == [
        "2028-02-29T12:00+01:00",
        "2029-02-28T12:00+01:00",
        "2030-02-28T12:00+01:00",
        "2031-02-28T12:00+01:00",
        "2032-02-29T12:00+01:00",
    ]
    # @yearly is January 1st: a start on Feb 29 only says when it begins
    yearly = Recurrence("@yearly", BERLIN, start_ms=start)
    assert local(yearly.next_occurrence(0) or 0, BERLIN) == "2029-01-01T00:00+01:00"
    # a count from a Feb 29 start counts leap days
    counted = Recurrence("0 12 29 2 *", BERLIN, start_ms=start, max_occurrences=3)
    assert local(counted.last_allowed_ms, BERLIN) == "2036-02-29T12:00+01:00"
    assert counted.next_occurrence(at("2036-02-29T12:00+01:00")) is None


def test_a_daily_rate_steps_24_hours_across_a_leap_day_and_dst() -> None:
    start = at("2028-02-28T09:00:00+01:00")
    daily = Recurrence("rate(1 day)", BERLIN, start_ms=start)
    assert [local(t, BERLIN) for t in daily.occurrences_between(start - 1, FAR, 2)] == [
        "2028-02-28T09:00+01:00",
        "2028-02-29T09:00+01:00",
    ]
    # a rate ignores the zone: across 2028-03-26 (Berlin's spring change) it moves an hour
    assert local(daily.next_occurrence(at("2028-03-26T00:00:00Z")) or 0, BERLIN) == (
        "2028-03-26T10:00+02:00"
    )
