"""Business-time arithmetic: deadlines and elapsed business time across DST and holidays.

The calendar precomputes its opening windows per local year as UTC instants, with the
business seconds accumulated before each window. A deadline is then two binary searches:
find where the start sits in cumulative business time, add the budget, and find the window
in which that total is reached. All arithmetic happens on UTC instants, so a DST change
inside a 24x7 countdown costs neither an hour nor gains one.

Rules (see docs/sla-policy.md):

* Windows are half-open, ``[opening, closing)``: a case opened exactly at closing time starts
  counting at the next opening.
* A budget that runs out exactly at closing time is due at closing time, not at the next
  opening.
* Business time is the real time that elapses while the wall clock reads inside the window.
  An opening or closing in a DST gap takes effect when the clock jumps past it; a window
  that overlaps a repeated hour counts the overlap each time the clock reads it.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import math
import zoneinfo

from fluxsupport.domain import policy as policy_module

UTC = datetime.UTC


class BusinessCalendar:
    """Opening windows of one policy, extended on demand one local year at a time."""

    def __init__(self, policy: policy_module.Policy, always_open: bool = False) -> None:
        self.policy = policy
        self.zone = zoneinfo.ZoneInfo(policy.timezone)
        self.hours = policy.business_hours
        self.always_open = always_open or policy.business_hours.always_open
        self._around_the_clock: BusinessCalendar | None = None
        self._first_year = 0
        self._last_year = -1
        self._opens: list[float] = []
        self._closes: list[float] = []
        self._cum_start: list[float] = []
        self._cum_end: list[float] = []

    def for_level(self, level: int) -> BusinessCalendar:
        """The calendar a level's clocks run on: 24x7 for the policy's alwaysOpenLevels."""
        if self.always_open or level not in self.policy.always_open_levels:
            return self
        if self._around_the_clock is None:
            self._around_the_clock = BusinessCalendar(self.policy, always_open=True)
        return self._around_the_clock

    # ---- table --------------------------------------------------------------------------

    def _closed_days(self, first_year: int, last_year: int) -> set[datetime.date]:
        closed = set(self.policy.closed_dates)
        if self.policy.holidays:
            years = range(first_year, last_year + 1)
            closed.update(policy_module.holiday_calendar(self.policy.holidays, years).keys())
        return closed

    def _build(self, first_year: int, last_year: int) -> None:
        closed = self._closed_days(first_year, last_year)
        weekdays = self.hours.weekdays
        opening, closing = self.hours.opening, self.hours.closing
        opens: list[float] = []
        closes: list[float] = []
        day = datetime.date(first_year, 1, 1)
        end = datetime.date(last_year, 12, 31)
        one_day = datetime.timedelta(days=1)
        near = self._days_near_transitions(day, end)
        while day <= end:
            if day.weekday() in weekdays and day not in closed:
                for open_ts, close_ts in self._day_windows(day, opening, closing,
                                                           day in near):
                    if opens and open_ts <= closes[-1]:
                        # Adjacent 00:00-24:00 days form one window.
                        closes[-1] = max(closes[-1], close_ts)
                    else:
                        opens.append(open_ts)
                        closes.append(close_ts)
            day += one_day
        cum_start, cum_end, total = [], [], 0.0
        for open_ts, close_ts in zip(opens, closes, strict=True):
            cum_start.append(total)
            total += close_ts - open_ts
            cum_end.append(total)
        self._first_year, self._last_year = first_year, last_year
        self._opens, self._closes = opens, closes
        self._cum_start, self._cum_end = cum_start, cum_end

    def _days_near_transitions(self, first: datetime.date,
                               last: datetime.date) -> set[datetime.date]:
        """Days within a day of a UTC-offset change; all others take the fast path.

        One offset per UTC midnight: every offset change lies between two of them, and a
        local day spans at most the two UTC days around it.
        """
        near: set[datetime.date] = set()
        one_day = datetime.timedelta(days=1)
        day = first - one_day
        previous = self._offset(_midnight_utc(day))
        while day <= last + one_day:
            following = self._offset(_midnight_utc(day + one_day))
            if following != previous:
                near.update((day - one_day, day, day + one_day, day + 2 * one_day))
            previous = following
            day += one_day
        return near

    def _day_windows(self, day: datetime.date, opening: datetime.time,
                     closing: datetime.time | None,
                     near_transition: bool) -> list[tuple[float, float]]:
        """The UTC intervals of ``day`` during which the wall clock reads inside the window.

        Usually one interval. When the opening or closing falls in a DST gap, the window
        starts or ends when the clock jumps past it; when it falls in a repeated hour, the
        wall clock passes through part of the window twice, which gives two intervals.
        """
        end_day, end_time = (day, closing) if closing is not None else (
            day + datetime.timedelta(days=1), datetime.time())
        start = datetime.datetime.combine(day, opening, tzinfo=self.zone)
        stop = datetime.datetime.combine(end_day, end_time, tzinfo=self.zone)
        if not near_transition or len({moment.replace(fold=fold).utcoffset()
                                       for moment in (start, stop) for fold in (0, 1)}) == 1:
            # No transition at or between the ends: the common case.
            return [(start.timestamp(), stop.timestamp())]
        # Walk the pieces of constant UTC offset between the earliest reading of the opening
        # and the latest of the closing; on each piece the wall clock runs straight.
        low = min(start.replace(fold=0).timestamp(), start.replace(fold=1).timestamp())
        high = max(stop.replace(fold=0).timestamp(), stop.replace(fold=1).timestamp())
        open_wall = _naive_seconds(start)
        close_wall = _naive_seconds(stop)
        bounds = [low, *self._transitions(low, high), high]
        windows = []
        for piece_start, piece_end in itertools.pairwise(bounds):
            offset = self._offset(piece_start)
            begin = max(piece_start, open_wall - offset)
            finish = min(piece_end, close_wall - offset)
            if begin < finish:
                windows.append((begin, finish))
        return windows

    def _offset(self, ts: float) -> float:
        offset = datetime.datetime.fromtimestamp(ts, self.zone).utcoffset()
        return offset.total_seconds() if offset is not None else 0.0

    def _transitions(self, low: float, high: float) -> list[float]:
        """UTC instants in ``(low, high)`` where the offset changes, found by bisection.

        Chunks of at most 6 hours, so that two transitions cancelling out within a chunk are
        not missed (tzdata has no two transitions that close together in 1970-2099).
        """
        found: list[float] = []
        chunk = 6 * 3600.0
        left = low
        while left < high:
            right = min(left + chunk, high)
            if self._offset(left) != self._offset(right):
                a, b = left, right
                while b - a > 1.0:  # tzdata transitions fall on whole seconds
                    middle = math.floor((a + b) / 2)
                    if middle <= a:
                        break
                    a, b = (middle, b) if self._offset(middle) == self._offset(a) else (a, middle)
                found.append(b)
            left = right
        return found

    def _ensure(self, moment: float, horizon_s: float = 0.0) -> None:
        """Make the table cover ``moment`` and enough windows to add ``horizon_s`` to it."""
        year = datetime.datetime.fromtimestamp(moment, self.zone).year
        first, last = self._first_year, self._last_year
        if first > last:
            first, last = year - 1, year + 1
        first, last = min(first, year - 1), max(last, year + 1)
        if (first, last) != (self._first_year, self._last_year):
            self._build(first, last)
        while self._cum_end and self._cumulative(moment) + horizon_s > self._cum_end[-1]:
            if self._last_year - self._first_year > 200:
                raise ValueError("the calendar has no business time within 200 years")
            self._build(self._first_year, self._last_year + 1)
        if not self._cum_end:
            self._build(self._first_year, self._last_year + 5)
            if not self._cum_end:
                raise ValueError("the calendar has no business time at all")

    def _cumulative(self, moment: float) -> float:
        """Business seconds from the start of the table to ``moment``."""
        index = bisect.bisect_right(self._opens, moment) - 1
        if index < 0:
            return 0.0
        return self._cum_start[index] + min(moment - self._opens[index],
                                            self._closes[index] - self._opens[index])

    # ---- queries --------------------------------------------------------------------------

    def add(self, start: datetime.datetime, seconds: float) -> datetime.datetime:
        """The first instant at which ``seconds`` of business time have passed since ``start``."""
        moment = _timestamp(start)
        if self.always_open:
            return _from_timestamp(moment + seconds)
        self._ensure(moment, seconds)
        target = self._cumulative(moment) + seconds
        index = bisect.bisect_left(self._cum_end, target)
        return _from_timestamp(self._closes[index] - (self._cum_end[index] - target))

    def elapsed(self, start: datetime.datetime, end: datetime.datetime) -> float:
        """Business seconds between two instants (negative if ``end`` is before ``start``)."""
        a, b = _timestamp(start), _timestamp(end)
        if self.always_open:
            return b - a
        self._ensure(min(a, b))
        self._ensure(max(a, b))
        return self._cumulative(b) - self._cumulative(a)

    def clock_start(self, moment: datetime.datetime) -> datetime.datetime:
        """When the clock starts for a case opened at ``moment``: now if open, else next opening."""
        ts = _timestamp(moment)
        if self.always_open:
            return _from_timestamp(ts)
        self._ensure(ts, 1.0)
        index = bisect.bisect_right(self._opens, ts) - 1
        if index >= 0 and ts < self._closes[index]:
            return _from_timestamp(ts)
        return _from_timestamp(self._opens[index + 1])

    def is_open(self, moment: datetime.datetime) -> bool:
        ts = _timestamp(moment)
        if self.always_open:
            return True
        self._ensure(ts)
        index = bisect.bisect_right(self._opens, ts) - 1
        return index >= 0 and ts < self._closes[index]

    def is_closing_instant(self, moment: datetime.datetime) -> bool:
        ts = _timestamp(moment)
        self._ensure(ts)
        index = bisect.bisect_left(self._closes, ts)
        return index < len(self._closes) and self._closes[index] == ts


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def _midnight_utc(day: datetime.date) -> float:
    return float((day.toordinal() - _EPOCH_ORDINAL) * 86400)


def _naive_seconds(moment: datetime.datetime) -> float:
    """The wall-clock reading of ``moment`` as seconds on a UTC-like scale (offset ignored)."""
    return moment.replace(tzinfo=UTC).timestamp()


def _timestamp(moment: datetime.datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
    return moment.timestamp()


def _from_timestamp(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, UTC)
