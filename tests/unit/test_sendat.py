from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.domain.errors import ValidationError
from scheduler.domain.sendat import (
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    check_horizon,
    format_rfc3339_ms,
    parse_send_at,
)

pytestmark = pytest.mark.unit

# a day inside the range so that any offset still gives a year in 1..9999
instants = st.integers(min_value=MIN_EPOCH_MS, max_value=MAX_EPOCH_MS - 86_400_000)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


def _with_offset(epoch_ms: int, offset_min: int) -> str:
    tz = timezone(timedelta(minutes=offset_min))
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC).astimezone(tz)
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S")
        + f".{epoch_ms % 1000:03d}"
        + moment.strftime("%z")[:3]
        + ":"
        + moment.strftime("%z")[3:]
    )


@given(instants, offsets)
def test_any_offset_normalises_to_the_same_instant(epoch_ms: int, offset_min: int) -> None:
    assert parse_send_at(_with_offset(epoch_ms, offset_min)) == epoch_ms


@given(instants)
def test_format_round_trips(epoch_ms: int) -> None:
    assert parse_send_at(format_rfc3339_ms(epoch_ms)) == epoch_ms


@given(instants)
def test_epoch_ms_integers_pass_through(epoch_ms: int) -> None:
    assert parse_send_at(epoch_ms) == epoch_ms


def test_known_values() -> None:
    assert parse_send_at("2030-01-01T12:00:00Z") == 1_893_499_200_000
    assert parse_send_at("2030-01-01T17:30:00+05:30") == 1_893_499_200_000
    assert parse_send_at("2030-01-01t12:00:00.5z") == 1_893_499_200_500
    assert parse_send_at("2029-12-31T23:00:00-13:00") == 1_893_499_200_000
    assert parse_send_at(1_893_499_200_000.0) == 1_893_499_200_000


def test_sub_millisecond_fraction_rounds_up_never_early() -> None:
    assert parse_send_at("2030-01-01T12:00:00.000001Z") == 1_893_499_200_001
    assert parse_send_at("2030-01-01T12:00:00.999999999Z") == 1_893_499_201_000


@pytest.mark.parametrize(
    "value",
    [
        "2030-01-01T12:00:00",  # no offset: ambiguous
        "2030-01-01",
        "2030-02-30T00:00:00Z",
        "2029-02-29T00:00:00Z",
        "2030-13-01T00:00:00Z",
        "2030-01-01T24:00:00Z",
        "2030-01-01T12:00:60Z",
        "2030-01-01T12:00:00+24:00",
        "2030-01-01T12:00:00+05:60",
        "tomorrow",
        "1893499200000",  # digits in a string are not epoch ms
        1_893_499_200,  # seconds, not ms
        1.5e12 + 0.5,
        True,
        [],
        {},
        -1,
    ],
)
def test_refused_with_invalid_token(value: object) -> None:
    with pytest.raises(ValidationError) as err:
        parse_send_at(value)
    assert err.value.token == "invalid_sendAt"
    assert err.value.message


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing(value: object) -> None:
    with pytest.raises(ValidationError) as err:
        parse_send_at(value)
    assert err.value.token == "missing_sendAt"


def test_leap_day_is_valid() -> None:
    assert parse_send_at("2028-02-29T00:00:00Z") == 1_835_395_200_000


def test_horizon_window() -> None:
    now, day = 1_900_000_000_000, 86_400_000
    check_horizon(now - day, now, past_window_ms=day, max_future_ms=10 * 365 * day)
    check_horizon(now + 10 * 365 * day, now, past_window_ms=day, max_future_ms=10 * 365 * day)
    with pytest.raises(ValidationError):
        check_horizon(now - day - 1, now, past_window_ms=day, max_future_ms=day)
    with pytest.raises(ValidationError):
        check_horizon(now + day + 1, now, past_window_ms=day, max_future_ms=day)
