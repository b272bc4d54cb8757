"""Recurrence: validation and its messages, rates, occurrences, the catch-up decision, the
representation, and properties over generated recurrences (DST cases: test_recurrence_dst.py)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import is_message_id, occurrence_message_id
from scheduler.domain.recurrence import (
    DEFAULT_CATCH_UP_LIMIT,
    MAX_OCCURRENCES,
    CatchUp,
    CatchUpPolicy,
    Recurrence,
)
from scheduler.domain.sendat import MAX_EPOCH_MS, parse_rfc3339_ms

pytestmark = pytest.mark.unit

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = parse_rfc3339_ms("2027-06-01T12:00:00Z")  # a whole UTC minute (and hour, and day's noon)


def at(text: str) -> int:
    return parse_rfc3339_ms(text)


# --- validation: the token and a message a client can act on ---------------------------------


@pytest.mark.parametrize(
    ("kwargs", "token", "words"),
    [
        ({"expression": ""}, "invalid_expression", "expression is required"),
        ({"expression": "   "}, "invalid_expression", "expression is required"),
        ({"expression": 5}, "invalid_expression", "expression must be a string"),
        (
            {"expression": "* * * *"},
            "invalid_expression",
            "has 4 field(s); a cron expression has 5",
        ),
        (
            {"expression": "0 * * * * *"},
            "invalid_expression",
            "neither a seconds field nor a year field",
        ),
        ({"expression": "0 0 12 * * ? *"}, "invalid_expression", "7-field Quartz form"),
        ({"expression": "61 * * * *"}, "invalid_expression", "bad minute field"),
        ({"expression": "0 24 * * *"}, "invalid_expression", "bad hour field"),
        ({"expression": "0 0 30 2 *"}, "invalid_expression", "bad day-of-month field"),
        ({"expression": "0 0 1 13 *"}, "invalid_expression", "bad month field"),
        ({"expression": "0 0 * * 8"}, "invalid_expression", "bad day-of-week field"),
        ({"expression": "0 0 ? * MON"}, "invalid_expression", "bad day-of-month field"),
        ({"expression": "@reboot"}, "invalid_expression", "not a supported macro"),
        ({"expression": "rate(0 minutes)"}, "invalid_expression", "between 1 and 1,000,000"),
        ({"expression": "rate(5 weeks)"}, "invalid_expression", "seconds, minutes, hours or days"),
        ({"expression": "rate(1.5 hours)"}, "invalid_expression", "whole number N"),
        ({"expression": "rate(-1 hours)"}, "invalid_expression", "not a valid rate"),
        ({"expression": "rate(2000000 seconds)"}, "invalid_expression", "between 1 and"),
        ({"expression": "rate(\uff15 minutes)"}, "invalid_expression", "not a valid rate"),
        ({"expression": "@daily", "timezone": "Mars/Olympus"}, "invalid_timezone", "not an IANA"),
        (
            {"expression": "@daily", "timezone": "europe/berlin"},
            "invalid_timezone",
            "Europe/Berlin?",
        ),
        ({"expression": "@daily", "timezone": "localtime"}, "invalid_timezone", "not an IANA"),
        ({"expression": "@daily", "timezone": "../../etc/passwd"}, "invalid_timezone", "IANA"),
        ({"expression": "@daily", "timezone": ""}, "invalid_timezone", "not an IANA"),
        ({"expression": "@daily", "timezone": None}, "invalid_timezone", "must be a string"),
        ({"expression": "@daily", "start_ms": True}, "invalid_start", "epoch milliseconds"),
        ({"expression": "@daily", "start_ms": 1.8e12}, "invalid_start", "epoch milliseconds"),
        ({"expression": "@daily", "start_ms": 1_800_000_000}, "invalid_start", "supported range"),
        ({"expression": "@daily", "end_ms": MAX_EPOCH_MS + 1}, "invalid_end", "supported range"),
        ({"expression": "@daily", "start_ms": T0, "end_ms": T0 - 1}, "invalid_end", "before start"),
        (
            {"expression": "@daily", "start_ms": T0, "max_occurrences": 0},
            "invalid_maxOccurrences",
            "1 to 1,000",
        ),
        (
            {"expression": "@daily", "start_ms": T0, "max_occurrences": MAX_OCCURRENCES + 1},
            "invalid_maxOccurrences",
            "1 to 1,000",
        ),
        (
            {"expression": "@daily", "start_ms": T0, "max_occurrences": "3"},
            "invalid_maxOccurrences",
            "whole number",
        ),
        ({"expression": "@daily", "max_occurrences": 3}, "invalid_maxOccurrences", "needs a start"),
        ({"expression": "@daily", "catch_up": "sometimes"}, "invalid_catchUp", "latest, skip, all"),
        ({"expression": "@daily", "catch_up": ["all"]}, "invalid_catchUp", "is not one of"),
        ({"expression": "@daily", "catch_up_limit": 5}, "invalid_catchUp", "only to catchUp 'all'"),
        (
            {"expression": "@daily", "catch_up": "all", "catch_up_limit": 0},
            "invalid_catchUp",
            "1 to 1,000",
        ),
        (
            {"expression": "@daily", "catch_up": "all", "catch_up_limit": 1001},
            "invalid_catchUp",
            "1 to 1,000",
        ),
        (
            {
                "expression": "0 0 29 2 *",
                "start_ms": at("2029-03-01T00:00:00Z"),
                "end_ms": at("2031-12-31T00:00:00Z"),
            },
            "invalid_expression",
            "never fires between start and end",
        ),
    ],
)
def test_invalid_recurrences_are_refused_with_a_token_and_a_clear_message(
    kwargs: dict[str, Any], token: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Recurrence(**kwargs)
    assert caught.value.token == token
    assert words in caught.value.message


def test_a_cron_error_names_the_expression_and_shows_examples() -> None:
    with pytest.raises(ValidationError) as caught:
        Recurrence("0 25 * * *")
    assert caught.value.message == (
        "expression '0 25 * * *' is not a valid cron expression: bad hour field (fields: minute"
        " hour day-of-month month day-of-week); e.g. '0 9 * * MON-FRI', '@daily' or"
        " 'rate(15 minutes)'"
    )


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("0  9 *\t* MON-FRI", "0 9 * * MON-FRI"),
        ("  @Daily ", "@daily"),
        ("@ANNUALLY", "@annually"),
        ("RATE( 15  Minutes )", "rate(15 minutes)"),
        ("rate(1 minutes)", "rate(1 minute)"),
        ("rate(2 hour)", "rate(2 hours)"),
        ("rate(007 days)", "rate(7 days)"),
    ],
)
def test_expressions_are_normalised(given: str, normalised: str) -> None:
    recurrence = Recurrence(given)
    assert recurrence.expression == normalised
    assert recurrence == Recurrence(normalised)
    assert hash(recurrence) == hash(Recurrence(normalised))


def test_defaults_and_the_bound_of_all() -> None:
    plain = Recurrence("@hourly")
    assert (plain.timezone, plain.catch_up, plain.catch_up_limit) == ("UTC", "latest", None)
    everything = Recurrence("@hourly", catch_up="all")
    assert everything.catch_up is CatchUpPolicy.ALL
    assert everything.catch_up_limit == DEFAULT_CATCH_UP_LIMIT == 100


def test_a_recurrence_is_immutable() -> None:
    recurrence = Recurrence("@hourly")
    with pytest.raises(AttributeError):
        recurrence.expression = "@daily"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("@yearly", "2027-06-01T12:00:00Z", "2028-01-01T00:00:00Z"),
        ("@annually", "2027-06-01T12:00:00Z", "2028-01-01T00:00:00Z"),
        ("@monthly", "2027-06-01T12:00:00Z", "2027-07-01T00:00:00Z"),
        ("@weekly", "2027-06-01T12:00:00Z", "2027-06-06T00:00:00Z"),  # a Sunday
        ("@daily", "2027-06-01T12:00:00Z", "2027-06-02T00:00:00Z"),
        ("@midnight", "2027-06-01T12:00:00Z", "2027-06-02T00:00:00Z"),
        ("@hourly", "2027-06-01T12:00:00Z", "2027-06-01T13:00:00Z"),
        ("0 9 * * MON-FRI", "2027-06-04T09:00:00Z", "2027-06-07T09:00:00Z"),  # Fri -> Mon
        ("0 0 1 * MON", "2027-06-01T12:00:00Z", "2027-06-07T00:00:00Z"),  # day OR weekday
        ("0 0 L * *", "2027-06-01T12:00:00Z", "2027-06-30T00:00:00Z"),
        ("0 0 * * MON#1", "2027-06-08T12:00:00Z", "2027-07-05T00:00:00Z"),
    ],
)
def test_macros_and_cron_expressions_in_utc(expression: str, after: str, expected: str) -> None:
    assert Recurrence(expression).next_occurrence(at(after)) == at(expected)


def test_cron_is_evaluated_in_the_zone() -> None:
    berlin = Recurrence("0 9 * * *", "Europe/Berlin")
    assert berlin.next_occurrence(T0) == at("2027-06-02T07:00:00Z")  # 09:00 CEST
    winter = at("2027-12-01T00:00:00Z")
    assert berlin.next_occurrence(winter) == at("2027-12-01T08:00:00Z")  # 09:00 CET
    assert Recurrence("0 9 * * *", "Asia/Kolkata").next_occurrence(T0) == at("2027-06-02T03:30:00Z")


# --- rates ----------------------------------------------------------------------------------


def test_a_rate_is_anchored_at_its_start() -> None:
    start = T0 + 7_777
    rate = Recurrence("rate(15 minutes)", start_ms=start)
    assert rate.interval_ms == 15 * MIN
    assert rate.next_occurrence(0) == start
    assert rate.next_occurrence(start - 1) == start
    assert rate.next_occurrence(start) == start + 15 * MIN
    assert rate.occurrences_between(start + 1, start + HOUR, 10) == [
        start + 15 * MIN,
        start + 30 * MIN,
        start + 45 * MIN,
        start + HOUR,
    ]


def test_a_rate_without_a_start_is_anchored_at_the_epoch() -> None:
    assert Recurrence("rate(1 hour)").next_occurrence(T0 + 1) == T0 + HOUR
    assert Recurrence("rate(7 seconds)").next_occurrence(T0) == T0 + 7_000 - T0 % 7_000
    assert Recurrence("rate(1 day)").next_occurrence(T0) == T0 + 12 * HOUR  # 00:00 UTC


def test_a_rate_does_not_depend_on_the_zone() -> None:
    start = at("2027-03-27T12:00:00Z")
    utc = Recurrence("rate(6 hours)", "UTC", start_ms=start)
    berlin = Recurrence("rate(6 hours)", "Europe/Berlin", start_ms=start)
    window = (start - 1, start + 5 * DAY, 100)
    assert utc.occurrences_between(*window) == berlin.occurrences_between(*window)
    assert all(b - a == 6 * HOUR for a, b in itertools.pairwise(utc.occurrences_between(*window)))


def test_start_and_end_are_inclusive_and_the_count_ends_the_schedule() -> None:
    start = T0
    bounded = Recurrence("rate(1 minute)", start_ms=start, end_ms=start + 3 * MIN)
    assert bounded.occurrences_between(0, MAX_EPOCH_MS, 100) == [
        start,
        start + MIN,
        start + 2 * MIN,
        start + 3 * MIN,
    ]
    assert bounded.next_occurrence(start + 3 * MIN) is None
    counted = Recurrence("rate(1 minute)", start_ms=start, max_occurrences=2)
    assert counted.occurrences_between(0, MAX_EPOCH_MS, 100) == [start, start + MIN]
    assert counted.last_allowed_ms == start + MIN
    cron = Recurrence("@hourly", start_ms=start + 1, max_occurrences=3)
    assert cron.occurrences_between(0, MAX_EPOCH_MS, 100) == [
        start + HOUR,
        start + 2 * HOUR,
        start + 3 * HOUR,
    ]
    # the end wins over a count it cuts short
    both = Recurrence("@hourly", start_ms=start, end_ms=start + HOUR, max_occurrences=5)
    assert both.occurrences_between(0, MAX_EPOCH_MS, 100) == [start, start + HOUR]


def test_occurrences_between_is_half_open_and_limited() -> None:
    hourly = Recurrence("@hourly")
    assert hourly.occurrences_between(T0, T0 + 2 * HOUR, 10) == [T0 + HOUR, T0 + 2 * HOUR]
    assert hourly.occurrences_between(T0 - 1, T0 + 2 * HOUR - 1, 10) == [T0, T0 + HOUR]
    assert hourly.occurrences_between(T0, T0 + 5 * HOUR, 2) == [T0 + HOUR, T0 + 2 * HOUR]
    assert hourly.occurrences_between(T0, T0 + 5 * HOUR, 0) == []
    assert hourly.occurrences_between(T0, T0, 10) == []
    with pytest.raises(ValueError, match="limit"):
        hourly.occurrences_between(T0, T0 + HOUR, -1)


def test_the_last_occurrences_before_year_10000() -> None:
    # local time in an eastern zone passes year 9999 before UTC does: the walk just ends
    tokyo = Recurrence("@hourly", "Asia/Tokyo")
    assert tokyo.next_occurrence(MAX_EPOCH_MS - HOUR) is None
    assert Recurrence("@hourly").next_occurrence(MAX_EPOCH_MS - HOUR) == MAX_EPOCH_MS + 1 - HOUR
    assert Recurrence("@hourly").next_occurrence(MAX_EPOCH_MS + 1 - HOUR) is None
    assert Recurrence("rate(1 hour)").next_occurrence(MAX_EPOCH_MS) is None


# --- the catch-up decision ------------------------------------------------------------------


def minutely(policy: str = "latest", limit: int | None = None) -> Recurrence:
    return Recurrence("* * * * *", catch_up=policy, catch_up_limit=limit)


def test_on_time_occurrences_are_created_whatever_the_policy() -> None:
    for policy in ("latest", "skip", "all"):
        # the runner is 2 s late for the occurrence at T0: late, not missed
        decision = minutely(policy).catch_up_now(T0 - MIN, T0 + 2_000)
        assert decision == CatchUp(create=(T0,), cursor_ms=T0, skipped=False)


def test_nothing_due_changes_nothing() -> None:
    assert minutely().catch_up_now(T0, T0 + 59_999) == CatchUp((), T0, False)
    assert minutely().catch_up_now(T0, T0) == CatchUp((), T0, False)
    assert minutely().catch_up_now(T0 + 5 * MIN, T0) == CatchUp((), T0 + 5 * MIN, False)


def test_latest_creates_the_most_recent_missed_occurrence_only() -> None:
    # down from T0 to T0 + 10 min 30 s: ten missed, the last one 90 s ago (grace 60 s)
    decision = minutely().catch_up_now(T0, T0 + 10 * MIN + 30_000, grace_ms=20_000)
    assert decision == CatchUp(create=(T0 + 10 * MIN,), cursor_ms=T0 + 10 * MIN, skipped=True)


def test_latest_an_on_time_occurrence_supersedes_the_missed_ones() -> None:
    decision = minutely().catch_up_now(T0, T0 + 10 * MIN + 30_000)  # default grace: 60 s
    assert decision == CatchUp(create=(T0 + 10 * MIN,), cursor_ms=T0 + 10 * MIN, skipped=True)
    decision = minutely().catch_up_now(T0, T0 + 10 * MIN + 30_000, grace_ms=90_000)
    assert decision == CatchUp(
        create=(T0 + 9 * MIN, T0 + 10 * MIN), cursor_ms=T0 + 10 * MIN, skipped=True
    )


def test_latest_a_single_missed_occurrence_is_not_a_skip() -> None:
    decision = minutely().catch_up_now(T0, T0 + MIN + 30_000, grace_ms=10_000)
    assert decision == CatchUp(create=(T0 + MIN,), cursor_ms=T0 + MIN, skipped=False)


def test_skip_creates_no_missed_occurrence_but_moves_the_cursor_past_them() -> None:
    decision = minutely("skip").catch_up_now(T0, T0 + 10 * MIN + 30_000, grace_ms=20_000)
    assert decision == CatchUp(create=(), cursor_ms=T0 + 10 * MIN, skipped=True)
    decision = minutely("skip").catch_up_now(T0, T0 + 10 * MIN + 10_000, grace_ms=20_000)
    assert decision == CatchUp(create=(T0 + 10 * MIN,), cursor_ms=T0 + 10 * MIN, skipped=True)


def test_all_creates_every_missed_occurrence_up_to_its_bound_the_most_recent_ones() -> None:
    now = T0 + 10 * MIN + 30_000
    decision = minutely("all", 3).catch_up_now(T0, now, grace_ms=20_000)
    assert decision == CatchUp(
        create=(T0 + 8 * MIN, T0 + 9 * MIN, T0 + 10 * MIN), cursor_ms=T0 + 10 * MIN, skipped=True
    )
    decision = minutely("all", 10).catch_up_now(T0, now, grace_ms=20_000)
    assert decision.create == tuple(T0 + k * MIN for k in range(1, 11))
    assert not decision.skipped
    # the bound is for missed ones: on-time ones come on top
    decision = minutely("all", 2).catch_up_now(T0, now)
    assert decision.create == (T0 + 8 * MIN, T0 + 9 * MIN, T0 + 10 * MIN)
    assert decision.skipped


def test_catch_up_honours_start_end_and_count() -> None:
    start = T0 + 3 * MIN
    late = T0 + DAY
    bounded = Recurrence(
        "* * * * *", start_ms=start, end_ms=start + 4 * MIN, catch_up="all", catch_up_limit=50
    )
    assert bounded.catch_up_now(None, late).create == tuple(start + k * MIN for k in range(5))
    counted = Recurrence("* * * * *", start_ms=start, max_occurrences=2, catch_up="all")
    assert counted.catch_up_now(None, late) == CatchUp((start, start + MIN), start + MIN, False)
    assert counted.catch_up_now(start + MIN, late) == CatchUp((), start + MIN, False)
    latest = Recurrence("* * * * *", start_ms=start, max_occurrences=2)
    assert latest.catch_up_now(None, late) == CatchUp((start + MIN,), start + MIN, True)


def test_a_new_schedule_whose_start_is_past_applies_the_policy_from_its_start() -> None:
    # the caller passes its creation instant as the cursor when nothing before it was missed
    recurrence = Recurrence("@hourly", start_ms=T0 - 5 * DAY)
    assert recurrence.catch_up_now(None, T0 + 30 * MIN).create == (T0,)
    assert recurrence.catch_up_now(T0 + 30 * MIN, T0 + 30 * MIN).create == ()


def test_catch_up_after_years_down_costs_what_it_creates() -> None:
    # every minute, down for ten years: the decision walks back from now, not forward from then
    decision = minutely("all", 5).catch_up_now(T0 - 3650 * DAY, T0 + 30 * MIN, grace_ms=0)
    # five missed ones, and the one due right now (on time)
    assert decision.create == tuple(T0 + k * MIN for k in range(25, 31))
    assert decision.skipped


def test_catch_up_across_a_dst_gap_in_the_zone() -> None:
    berlin = Recurrence("30 2 * * *", "Europe/Berlin", catch_up="all")
    down_from = at("2027-03-26T12:00:00Z")
    back_at = at("2027-03-29T12:00:00Z")
    assert berlin.catch_up_now(down_from, back_at).create == (
        at("2027-03-27T01:30:00Z"),  # 02:30 CET
        at("2027-03-28T01:00:00Z"),  # 02:30 does not exist: 03:00 CEST
        at("2027-03-29T00:30:00Z"),  # 02:30 CEST
    )


def test_a_negative_grace_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="grace"):
        minutely().catch_up_now(T0, T0 + HOUR, grace_ms=-1)


# --- the representation ---------------------------------------------------------------------


EXAMPLES = [
    Recurrence("@daily"),
    Recurrence("0 9 * * MON-FRI", "Europe/Berlin", start_ms=T0, end_ms=T0 + 365 * DAY),
    Recurrence("rate(15 minutes)", start_ms=T0, max_occurrences=96, catch_up="skip"),
    Recurrence("*/5 * * * *", "Australia/Lord_Howe", catch_up="all", catch_up_limit=7),
    Recurrence("0 12 L 2 *", "America/New_York", catch_up="all"),
]


@pytest.mark.parametrize("recurrence", EXAMPLES, ids=str)
def test_the_representation_round_trips_through_json(recurrence: Recurrence) -> None:
    text = json.dumps(recurrence.to_dict())
    again = Recurrence.from_dict(json.loads(text))
    assert again == recurrence
    assert again.to_dict() == recurrence.to_dict()
    assert again.occurrences_between(T0, T0 + 30 * DAY, 50) == recurrence.occurrences_between(
        T0, T0 + 30 * DAY, 50
    )


def test_the_representation_is_versioned_and_lists_every_field() -> None:
    assert Recurrence("0 9 * * *", "Europe/Berlin", start_ms=T0).to_dict() == {
        "version": 1,
        "expression": "0 9 * * *",
        "timezone": "Europe/Berlin",
        "start_ms": T0,
        "end_ms": None,
        "max_occurrences": None,
        "catch_up": "latest",
        "catch_up_limit": None,
    }


def test_a_representation_without_optional_fields_still_reads() -> None:
    minimal = Recurrence.from_dict({"version": 1, "expression": "@hourly"})
    assert minimal == Recurrence("@hourly")
    nulls = Recurrence.from_dict(
        {
            "version": 1,
            "expression": "@hourly",
            "timezone": None,
            "start_ms": None,
            "end_ms": None,
            "max_occurrences": None,
            "catch_up": None,
            "catch_up_limit": None,
        }
    )
    assert nulls == minimal
    assert minimal.to_dict()["catch_up"] == "latest"


@pytest.mark.parametrize(
    ("data", "token", "words"),
    [
        ([], "invalid_recurrence", "must be a JSON object"),
        ({"expression": "@daily"}, "invalid_recurrence", "version must be an integer"),
        ({"version": "1", "expression": "@daily"}, "invalid_recurrence", "version must be"),
        ({"version": True, "expression": "@daily"}, "invalid_recurrence", "version must be"),
        ({"version": 0, "expression": "@daily"}, "invalid_recurrence", "version must be"),
        ({"version": 2, "expression": "@daily"}, "invalid_recurrence", "version 2 is newer"),
        ({"version": 1, "expression": "@daily", "jitter": 5}, "invalid_recurrence", "jitter"),
        ({"version": 1}, "invalid_expression", "expression is required"),
        ({"version": 1, "expression": "@daily", "timezone": "Nowhere"}, "invalid_timezone", "IANA"),
        ({"version": 1, "expression": "@daily", "start_ms": "x"}, "invalid_start", "integer"),
    ],
)
def test_a_bad_representation_is_refused(data: Any, token: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Recurrence.from_dict(data)
    assert caught.value.token == token
    assert words in caught.value.message


# --- properties over generated recurrences --------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "30 2 * * *",
    "0 9 * * MON-FRI",
    "5 */3 * * *",
    "0 0 29 2 *",
    "0 12 L * *",
    "@hourly",
    "@weekly",
    "rate(1 second)",
    "rate(7 minutes)",
    "rate(5 hours)",
    "rate(3 days)",
]
YEAR = 366 * DAY
instants = st.integers(min_value=at("2026-01-01T00:00:00Z"), max_value=at("2030-01-01T00:00:00Z"))


@st.composite
def recurrences(draw: st.DrawFn) -> Recurrence:
    start = draw(st.none() | instants)
    end = draw(st.none() | st.integers(min_value=0, max_value=2 * YEAR))
    count = draw(st.none() | st.integers(min_value=1, max_value=40)) if start else None
    try:
        return Recurrence(
            draw(st.sampled_from(EXPRESSIONS)),
            draw(st.sampled_from(ZONES)),
            start_ms=start,
            end_ms=None if end is None else (start or at("2026-01-01T00:00:00Z")) + end,
            max_occurrences=count,
            catch_up=draw(st.sampled_from(list(CatchUpPolicy))),
        )
    except ValidationError as exc:  # a window too short for the expression: never fires
        assert "never fires" in exc.message
        reject()


def window_of(recurrence: Recurrence, after: int) -> list[int]:
    return recurrence.occurrences_between(after, after + 3 * YEAR, 300)


@settings(max_examples=150, deadline=None)
@given(recurrences(), instants)
def test_occurrences_increase_and_stay_within_start_end_and_count(
    recurrence: Recurrence, after: int
) -> None:
    times = window_of(recurrence, after)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert all(t > after for t in times)
    if recurrence.start_ms is not None:
        assert all(t >= recurrence.start_ms for t in times)
    if recurrence.end_ms is not None:
        assert all(t <= recurrence.end_ms for t in times)
    count, start = recurrence.max_occurrences, recurrence.start_ms
    if count is not None and start is not None:
        counted = recurrence.occurrences_between(start - 1, MAX_EPOCH_MS, count + 1)
        uncounted = replace(recurrence, max_occurrences=None)
        # exactly the first `count` occurrences of the same schedule without a count
        assert counted == uncounted.occurrences_between(start - 1, MAX_EPOCH_MS, count)
        assert all(t <= counted[-1] for t in times)
        assert recurrence.last_allowed_ms == counted[-1] or len(counted) < count


@settings(max_examples=150, deadline=None)
@given(recurrences(), instants)
def test_next_occurrence_is_strictly_after_and_nothing_lies_between(
    recurrence: Recurrence, after: int
) -> None:
    following = recurrence.next_occurrence(after)
    if following is None:
        assert window_of(recurrence, after) == []
        return
    assert following > after
    assert recurrence.occurrences_between(after, following, 10) == [following]
    assert recurrence.next_occurrence(following - 1) == following


@settings(max_examples=100, deadline=None)
@given(recurrences(), instants, st.integers(min_value=0, max_value=10 * DAY))
def test_walking_back_agrees_with_walking_forward(
    recurrence: Recurrence, after: int, length: int
) -> None:
    forward = recurrence.occurrences_between(after, after + length, 100_000)
    until = min(after + length, recurrence.last_allowed_ms)  # the walks leave the count to callers
    backward = list(itertools.islice(recurrence._backward(until, after), 100_000))
    assert backward == forward[::-1] or len(forward) == 100_000


@settings(max_examples=100, deadline=None)
@given(
    recurrences(),
    instants,
    st.integers(min_value=0, max_value=2 * DAY),
    st.integers(min_value=0, max_value=2 * HOUR),
)
def test_catch_up_creates_only_due_occurrences_after_the_cursor(
    recurrence: Recurrence, cursor: int, down_for: int, grace: int
) -> None:
    now = cursor + down_for
    decision = recurrence.catch_up_now(cursor, now, grace_ms=grace)
    due = recurrence.occurrences_between(cursor, now, 5_000)
    assume(len(due) < 5_000)  # rate(1 second) for two days: too many to check cheaply
    assert set(decision.create) <= set(due)
    assert list(decision.create) == sorted(set(decision.create))
    on_time = [t for t in due if t >= now - grace]
    assert set(on_time) <= set(decision.create)
    missed_created = len(decision.create) - len(on_time)
    if recurrence.catch_up is CatchUpPolicy.SKIP:
        assert missed_created == 0
    elif recurrence.catch_up is CatchUpPolicy.LATEST:
        assert missed_created == (1 if due and not on_time else 0)
    else:
        assert missed_created == min(len(due) - len(on_time), recurrence.catch_up_limit or 0)
    assert decision.cursor_ms == (due[-1] if due else cursor)
    assert decision.skipped == (len(due) > len(decision.create))


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=30),
    st.text(max_size=30),
    st.text(max_size=30),
    st.integers(min_value=0, max_value=MAX_EPOCH_MS),
    st.integers(min_value=0, max_value=MAX_EPOCH_MS),
)
def test_occurrence_ids_are_message_ids_and_differ_by_schedule_and_instant(
    app: str, schedule: str, other: str, t: int, u: int
) -> None:
    mine = occurrence_message_id(app, schedule, t)
    assert is_message_id(mine)
    assert mine == occurrence_message_id(app, schedule, t)
    if other != schedule:
        assert occurrence_message_id(app, other, t) != mine
        assert occurrence_message_id(other, schedule, t) != mine or other == app
    if u != t:
        assert occurrence_message_id(app, schedule, u) != mine
        # one schedule's ids sort by occurrence
        assert (occurrence_message_id(app, schedule, u) < mine) == (u < t)


def test_occurrence_ids_refuse_instants_outside_the_ulid_range() -> None:
    with pytest.raises(ValueError, match="ULID range"):
        occurrence_message_id("app", "schedule", -1)
    with pytest.raises(ValueError, match="ULID range"):
        occurrence_message_id("app", "schedule", 1 << 48)
