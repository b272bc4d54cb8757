"""Recurring schedules (issue #21): when a cron or rate schedule fires, as pure functions.

Design only: no route, store or runner uses this module yet (docs/SCHEDULES.md).

A `Recurrence` is the timing of a recurring schedule: an expression (a 5-field cron expression,
a macro such as `@daily`, or `rate(N unit)`), an IANA time zone (UTC by default), optional start
and end instants (both inclusive), an optional maximum number of occurrences counted from the
start, and a catch-up policy for occurrences missed while the system or the schedule was down.
Every instant is epoch milliseconds, like the rest of the code.

Rates are durations: `rate(15 minutes)` fires every 900,000 ms from its anchor, the start instant
(or, without a start, the Unix epoch: `rate(1 hour)` then fires on every whole UTC hour). The zone
does not change them: `rate(1 day)` is 24 hours, also across a daylight-saving change (use cron
for "the same local time every day").

Cron expressions are matched on the zone's wall clock by cronsim; this module maps each matching
local time to an instant with one rule, the same for every field and expression:

    A matching local time fires once, at the first instant at which the zone's clock shows
    that time or a later one.

So:
- a local time that exists once fires at that instant;
- a local time that happens twice (clocks go back) fires at its first occurrence (fold=0) and
  not again: in a repeated hour, `*/15` or `*` minutes fire in the first pass only, and the
  second pass is silent (wall-clock semantics; a rate gives even intervals instead);
- a local time that does not exist (clocks go forward) fires at the first instant after the
  gap, the instant the clocks jump (02:30 on Europe/Berlin's spring day fires at 03:00 CEST);
  several matching times in one gap fire together, once (`*/15 * * * *` has one occurrence at
  03:00 for 02:00, 02:15, 02:30, 02:45 and 03:00).

For jobs at a fixed time this is what Debian's cron (Vixie cron, cronie) does. cronsim applies
that handling only when neither the minute nor the hour field starts with `*` (so `0/15 2 * * *`
and `*/15 2 * * *` would differ in both gaps and overlaps), so this module runs cronsim on naive
wall-clock times and applies the rule itself. EventBridge Scheduler instead skips a local time
that does not exist; here a daily job at 02:30 still fires on the spring-forward day.

Zone rules come from the `tzdata` package (pinned by the lock file), not from the machine, so
every replica computes the same instants, and the same occurrence message ids
(`scheduler.domain.ids.occurrence_message_id`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from itertools import islice
from typing import Any, Final
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from scheduler.domain.errors import ValidationError
from scheduler.domain.sendat import MAX_EPOCH_MS, MIN_EPOCH_MS

# API error tokens (the names are those of the JSON fields of the schedule routes).
INVALID_EXPRESSION: Final = "invalid_expression"
INVALID_TIMEZONE: Final = "invalid_timezone"
INVALID_START: Final = "invalid_start"
INVALID_END: Final = "invalid_end"
INVALID_MAX_OCCURRENCES: Final = "invalid_maxOccurrences"
INVALID_CATCH_UP: Final = "invalid_catchUp"
INVALID_RECURRENCE: Final = "invalid_recurrence"  # a stored representation of the wrong shape

VERSION: Final = 1  # of the `to_dict` representation
# Finding the last allowed occurrence of a counted cron schedule walks its occurrences from the
# start (once per recurrence and process, cached; never in the constructor). cronsim takes about
# 0.07 ms per step of a daily expression on a quiet core, 0.3 ms on a loaded one: the bound keeps
# the walk near 0.1 s. Use `end` for longer schedules.
MAX_OCCURRENCES: Final = 1_000
DEFAULT_CATCH_UP_LIMIT: Final = 100  # `all`: at most this many missed occurrences are created
MAX_CATCH_UP_LIMIT: Final = 1_000
# An occurrence due less than this long ago is late, not missed: it is created whatever the policy.
DEFAULT_GRACE_MS: Final = 60_000
MAX_RATE_VALUE: Final = 1_000_000

_UNIT_MS: Final = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
_RATE = re.compile(r"rate\(\s*([0-9]+)\s+(second|minute|hour|day)s?\s*\)", re.IGNORECASE)
# The usual macros of Vixie cron, as the 5-field expressions they stand for (@reboot has no time).
MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_FIELDS: Final = "minute hour day-of-month month day-of-week"
_EXAMPLES: Final = "e.g. '0 9 * * MON-FRI', '@daily' or 'rate(15 minutes)'"
# Zone names that depend on the machine, not on the IANA database.
_MACHINE_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})


class CatchUpPolicy(StrEnum):
    """What to create for occurrences missed while the system or the schedule was down."""

    LATEST = "latest"  # the most recent missed one only (none if an on-time one supersedes it)
    SKIP = "skip"  # none
    ALL = "all"  # every one, but at most `catch_up_limit` (the most recent ones)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """The decision of `Recurrence.catch_up_now`."""

    create: tuple[int, ...]  # occurrence instants to create now, increasing
    cursor_ms: int | None  # store as the new cursor: every occurrence up to it is handled
    skipped: bool  # missed occurrences were dropped (by the policy or its bound)


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """The IANA zone names of the bundled tzdata package (links such as US/Eastern included)."""
    text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(text.split()) - _MACHINE_ZONES


@lru_cache(maxsize=1024)
def load_zone(name: str) -> ZoneInfo:
    """The zone `name` from the bundled tzdata package; `ValidationError` if there is none."""
    if name not in zone_names():
        hint = ""
        close = sorted(z for z in zone_names() if z.lower() == name.strip().lower())
        if close:
            hint = f" (did you mean {close[0]}?)"
        raise ValidationError(
            INVALID_TIMEZONE,
            f"timezone {name!r} is not an IANA time zone name{hint}; "
            "use a name such as UTC, Europe/Berlin or America/New_York",
        )
    path = resources.files("tzdata.zoneinfo").joinpath(*name.split("/"))
    with path.open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def _parse_rate(text: str) -> tuple[str, int] | None:
    """(normalised expression, interval ms) of `rate(N unit)`, None if `text` is no rate."""
    if not text.lower().startswith("rate"):
        return None
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValidationError(
            INVALID_EXPRESSION,
            f"expression {text!r} is not a valid rate: write rate(N unit) with a whole number N"
            " and a unit of seconds, minutes, hours or days, e.g. rate(15 minutes)",
        )
    value, unit = int(match[1]), match[2].lower()
    if not 1 <= value <= MAX_RATE_VALUE:
        raise ValidationError(
            INVALID_EXPRESSION, f"rate value {value} must be between 1 and {MAX_RATE_VALUE:,}"
        )
    return f"rate({value} {unit}{'' if value == 1 else 's'})", value * _UNIT_MS[unit]


def _parse_cron(text: str) -> tuple[str, str]:
    """(normalised expression, the 5 fields for cronsim) of a cron expression or macro."""
    if text.startswith("@"):
        macro = text.lower()
        if macro not in MACROS:
            raise ValidationError(
                INVALID_EXPRESSION,
                f"expression {text!r} is not a supported macro; use one of "
                f"{', '.join(MACROS)} or a 5-field cron expression",
            )
        return macro, MACROS[macro]
    fields = text.split()
    if len(fields) != 5:
        extra = ""
        if len(fields) == 6:
            extra = (
                "; neither a seconds field nor a year field (EventBridge's cron(...)) is"
                " accepted: for intervals under a minute use a rate, e.g. rate(30 seconds)"
            )
        elif len(fields) == 7:
            extra = "; the 7-field Quartz form (seconds to year) is not accepted"
        raise ValidationError(
            INVALID_EXPRESSION,
            f"expression {text!r} has {len(fields)} field(s); a cron expression has 5 "
            f"({_CRON_FIELDS}){extra}; {_EXAMPLES}",
        )
    cron = " ".join(fields)
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except CronSimError as exc:
        # cronsim says e.g. "Bad day-of-month": name the field, keep its words.
        what = str(exc).removeprefix("Bad ").strip() or "expression"
        raise ValidationError(
            INVALID_EXPRESSION,
            f"expression {text!r} is not a valid cron expression: bad {what} field "
            f"(fields: {_CRON_FIELDS}); {_EXAMPLES}",
        ) from None
    return cron, cron


def _epoch_ms(value: object, token: str, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(token, f"{name} must be epoch milliseconds (an integer)")
    if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
        raise ValidationError(
            token, f"{name} {value} is outside the supported range (1973-03-03 to 9999-12-31)"
        )
    return value


def _positive(value: object, token: str, name: str, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValidationError(token, f"{name} must be a whole number from 1 to {maximum:,}")
    return value


@dataclass(frozen=True)
class Recurrence:
    """The validated, immutable timing of a recurring schedule (see the module docstring).

    The constructor normalises (`"0  9 * * *"` and `"0 9 * * *"` are one expression, the default
    bound of `all` is written out) and raises `ValidationError` with an API token and a message
    fit for a 400 answer.
    """

    expression: str
    timezone: str = "UTC"
    start_ms: int | None = None
    end_ms: int | None = None
    max_occurrences: int | None = None
    catch_up: CatchUpPolicy = CatchUpPolicy.LATEST
    catch_up_limit: int | None = None  # `all` only; default DEFAULT_CATCH_UP_LIMIT
    _rate_ms: int | None = field(init=False, repr=False, compare=False, default=None)
    _cron: str | None = field(init=False, repr=False, compare=False, default=None)
    _zone: ZoneInfo | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ValidationError(INVALID_EXPRESSION, f"expression must be a string; {_EXAMPLES}")
        if not self.expression.strip():
            raise ValidationError(INVALID_EXPRESSION, f"expression is required; {_EXAMPLES}")
        text = self.expression.strip()
        rate = _parse_rate(text)
        if rate is not None:
            expression, rate_ms = rate
            self._set("_rate_ms", rate_ms)
        else:
            expression, cron = _parse_cron(text)
            self._set("_cron", cron)
        self._set("expression", expression)
        if not isinstance(self.timezone, str):
            raise ValidationError(INVALID_TIMEZONE, "timezone must be a string")
        self._set("_zone", load_zone(self.timezone))
        start = _epoch_ms(self.start_ms, INVALID_START, "start")
        end = _epoch_ms(self.end_ms, INVALID_END, "end")
        if start is not None and end is not None and end < start:
            raise ValidationError(INVALID_END, "end must not be before start")
        count = _positive(
            self.max_occurrences, INVALID_MAX_OCCURRENCES, "maxOccurrences", MAX_OCCURRENCES
        )
        if count is not None and start is None:
            raise ValidationError(
                INVALID_MAX_OCCURRENCES, "maxOccurrences needs a start: occurrences count from it"
            )
        try:
            policy = CatchUpPolicy(self.catch_up)
        except ValueError:
            raise ValidationError(
                INVALID_CATCH_UP,
                f"catchUp {self.catch_up!r} is not one of "
                f"{', '.join(p.value for p in CatchUpPolicy)}",
            ) from None
        self._set("catch_up", policy)
        limit = _positive(self.catch_up_limit, INVALID_CATCH_UP, "catchUpLimit", MAX_CATCH_UP_LIMIT)
        if policy is CatchUpPolicy.ALL:
            self._set("catch_up_limit", DEFAULT_CATCH_UP_LIMIT if limit is None else limit)
        elif limit is not None:
            raise ValidationError(INVALID_CATCH_UP, "catchUpLimit applies only to catchUp 'all'")
        # (not next_occurrence: that would count to the last allowed occurrence right away)
        if next(self._forward(MIN_EPOCH_MS - 1, MAX_EPOCH_MS), None) is None:
            raise ValidationError(
                INVALID_EXPRESSION,
                f"expression {self.expression!r} never fires between start and end",
            )

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen value, in __post_init__ only

    # --- the occurrences -------------------------------------------------------------------

    @property
    def is_rate(self) -> bool:
        return self._rate_ms is not None

    @property
    def interval_ms(self) -> int | None:
        """A rate's interval; None for cron."""
        return self._rate_ms

    @property
    def last_allowed_ms(self) -> int:
        """No occurrence is after this: the end, the max_occurrences-th occurrence, or year 9999."""
        return _last_allowed_ms(self)

    def next_occurrence(self, after_ms: int) -> int | None:
        """The first occurrence strictly after `after_ms`; None when the schedule is over."""
        return next(self._forward(after_ms, self.last_allowed_ms), None)

    def occurrences_between(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """The occurrences t with after_ms < t <= until_ms, increasing, at most `limit` of them.

        Half-open, so consecutive windows (a, b] and (b, c] neither miss nor repeat one.
        """
        if limit < 0:
            raise ValueError("limit must not be negative")
        return list(islice(self._forward(after_ms, min(until_ms, self.last_allowed_ms)), limit))

    def latest_occurrences(self, at_or_before_ms: int, limit: int) -> list[int]:
        """The `limit` most recent occurrences at or before `at_or_before_ms`, newest first."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        return list(islice(self._backward(at_or_before_ms, MIN_EPOCH_MS - 1), limit))

    def catch_up_now(
        self, cursor_ms: int | None, now_ms: int, grace_ms: int = DEFAULT_GRACE_MS
    ) -> CatchUp:
        """Which occurrences to create now, given the cursor (the latest occurrence already created
        or skipped; None before the first) and `now_ms`.

        Due occurrences are those after the cursor and at or before now. One due within
        `grace_ms` of now is on time and always created; an older one was missed, and the policy
        decides: `latest` creates the most recent missed one unless an on-time one supersedes it,
        `skip` none, `all` the most recent `catch_up_limit` ones. Start, end and max_occurrences
        bound everything. Future occurrences are not this function's business
        (`occurrences_between`). The cost is bounded by the occurrences created or inspected
        around now, not by how long the schedule was down.
        """
        if grace_ms < 0:
            raise ValueError("grace must not be negative")
        after = MIN_EPOCH_MS - 1 if cursor_ms is None else cursor_ms
        due_until = min(now_ms, self.last_allowed_ms)
        on_time_from = now_ms - grace_ms
        on_time = list(self._forward(max(after, on_time_from - 1), due_until))
        if self.catch_up is CatchUpPolicy.ALL:
            assert self.catch_up_limit is not None  # set by __post_init__
            take = self.catch_up_limit
        elif self.catch_up is CatchUpPolicy.LATEST and not on_time:
            take = 1
        else:
            take = 0
        # the missed ones, newest first, one more than taken: is any left over?
        missed = list(islice(self._backward(min(on_time_from - 1, due_until), after), take + 1))
        create = tuple(sorted(missed[:take])) + tuple(on_time)
        cursor = max([*on_time, *missed[:1]], default=cursor_ms)
        return CatchUp(create=create, cursor_ms=cursor, skipped=len(missed) > take)

    # --- iteration ---------------------------------------------------------------------------

    def _lower_ms(self) -> int:
        return MIN_EPOCH_MS if self.start_ms is None else self.start_ms

    def _forward(self, after_ms: int, until_ms: int) -> Iterator[int]:
        """Occurrences t with after_ms < t <= until_ms and t >= start, increasing (no count)."""
        after = max(after_ms, self._lower_ms() - 1)
        until = min(until_ms, MAX_EPOCH_MS if self.end_ms is None else self.end_ms)
        if until <= after:
            return
        if self._rate_ms is not None:
            anchor = 0 if self.start_ms is None else self.start_ms
            t = anchor - (anchor - after - 1) // self._rate_ms * self._rate_ms  # first >= after+1
            while t <= until:
                yield t
                t += self._rate_ms
            return
        for t in self._cron_forward(after // 1000):
            if t * 1000 > until:
                return
            yield t * 1000

    def _backward(self, at_or_before_ms: int, after_ms: int) -> Iterator[int]:
        """Occurrences t with after_ms < t <= at_or_before_ms, decreasing (no count)."""
        after = max(after_ms, self._lower_ms() - 1)
        until = min(at_or_before_ms, MAX_EPOCH_MS if self.end_ms is None else self.end_ms)
        if until <= after:
            return
        if self._rate_ms is not None:
            anchor = 0 if self.start_ms is None else self.start_ms
            t = anchor + (until - anchor) // self._rate_ms * self._rate_ms  # last <= until
            while t > after:
                yield t
                t -= self._rate_ms
            return
        for t in self._cron_backward(until // 1000):
            if t * 1000 <= after:
                return
            yield t * 1000

    def _cron_forward(self, after_s: int) -> Iterator[int]:
        """Cron occurrences (epoch seconds) after `after_s`, increasing, without repeats."""
        assert self._cron is not None and self._zone is not None
        zone = self._zone
        try:
            # Every local time after the wall-clock reading of `after_s` maps to an instant after
            # it, except in the second pass of an overlap: there the rest of the repeated times
            # map to the first pass, before `after_s`, and are filtered out.
            local = datetime.fromtimestamp(after_s, zone).replace(tzinfo=None)
            last = after_s
            for wall in CronSim(self._cron, local):
                instant = _first_instant_showing(wall, zone)
                if instant > last:  # equal: several gap times fire together, once
                    last = instant
                    yield instant
        except (OverflowError, ValueError):
            return  # past year 9999 in local time: nothing more

    def _cron_backward(self, until_s: int) -> Iterator[int]:
        """Cron occurrences (epoch seconds) at or before `until_s`, decreasing, without repeats."""
        assert self._cron is not None and self._zone is not None
        zone = self._zone
        try:
            reading = datetime.fromtimestamp(until_s, zone)
            # In the second pass of an overlap, the local times up to the end of the repeated
            # span (at most its length ahead of this reading) fired in the first pass, before
            # `until_s`: start the walk back that far ahead, and filter.
            ahead = timedelta(0)
            if reading.fold:
                ahead = _offset(reading.replace(fold=0)) - _offset(reading)
            local = reading.replace(tzinfo=None) + ahead + timedelta(seconds=1)
            last = until_s + 1
            for wall in CronSim(self._cron, local, reverse=True):
                instant = _first_instant_showing(wall, zone)
                if instant < last and instant <= until_s:
                    last = instant
                    yield instant
        except (OverflowError, ValueError):
            return

    # --- representation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A versioned JSON object (snake_case, every field present: it maps to an Avro record
        with nullable fields and to a Cassandra text column as it is)."""
        return {
            "version": VERSION,
            "expression": self.expression,
            "timezone": self.timezone,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "max_occurrences": self.max_occurrences,
            "catch_up": self.catch_up.value,
            "catch_up_limit": self.catch_up_limit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recurrence:
        """Read `to_dict`'s representation. Only `version` and `expression` are required; a field
        missing or null takes its default. A newer version or an unknown field is refused
        (a newer writer may have changed the meaning)."""
        if not isinstance(data, Mapping):
            raise ValidationError(INVALID_RECURRENCE, "a recurrence must be a JSON object")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValidationError(INVALID_RECURRENCE, "recurrence version must be an integer >= 1")
        if version > VERSION:
            raise ValidationError(
                INVALID_RECURRENCE,
                f"recurrence version {version} is newer than this reader's ({VERSION})",
            )
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ValidationError(
                INVALID_RECURRENCE, f"unknown recurrence field(s) {', '.join(map(str, unknown))}"
            )
        if "expression" not in data:
            raise ValidationError(INVALID_EXPRESSION, f"expression is required; {_EXAMPLES}")
        return cls(
            expression=data["expression"],
            timezone="UTC" if data.get("timezone") is None else data["timezone"],
            start_ms=data.get("start_ms"),
            end_ms=data.get("end_ms"),
            max_occurrences=data.get("max_occurrences"),
            catch_up=CatchUpPolicy.LATEST if data.get("catch_up") is None else data["catch_up"],
            catch_up_limit=data.get("catch_up_limit"),
        )


_FIELDS: Final = frozenset(
    {
        "version",
        "expression",
        "timezone",
        "start_ms",
        "end_ms",
        "max_occurrences",
        "catch_up",
        "catch_up_limit",
    }
)


def _first_instant_showing(wall: datetime, zone: ZoneInfo) -> int:
    """The first instant (epoch seconds) at which `zone`'s clock shows `wall` or later: THE rule.

    An existing local time: its first occurrence (fold=0 is the earlier one of a repeated time).
    A local time in a gap: the instant the clocks jump over it, found by bisection between the
    two readings PEP 495 gives it (with the offset before the gap, and after it).
    """
    first = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wall:
        return first
    other = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    before, after = min(first, other), max(first, other)  # the clock shows < wall, > wall
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return after


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    assert offset is not None  # an aware datetime of a ZoneInfo
    return offset


@lru_cache(maxsize=4096)
def _last_allowed_ms(recurrence: Recurrence) -> int:
    """min(end, the max_occurrences-th occurrence, year 9999); cached per equal recurrence."""
    last = MAX_EPOCH_MS if recurrence.end_ms is None else recurrence.end_ms
    count, start = recurrence.max_occurrences, recurrence.start_ms
    if count is None or start is None:
        return last
    if recurrence.interval_ms is not None:
        return min(last, start + (count - 1) * recurrence.interval_ms)
    first = list(islice(recurrence._forward(start - 1, last), count))
    return first[-1] if len(first) == count else last
