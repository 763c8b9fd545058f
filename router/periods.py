"""Time windows and their periods (UTC), and the board periods they make.

A board keeps one standing per window it has: `all` never resets; `monthly`,
`weekly` (ISO weeks, from Monday 00:00) and `daily` reset at the start of each
period. An event belongs to the period of its occurred_at in each window. In the
code a period is the `date` it starts on; at the edges (HTTP, Redis, PostgreSQL)
it is a label: `all`, `2026-12`, `2026-W49`, `2026-12-01`.

A board period, `<board>:<window>:<label>`, names one standing: the unit that
PostgreSQL keys players by, that Redis keeps a sorted set for on each shard, and
that is archived when its period closes.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta

from router.errors import InvalidInput

WINDOWS = ("all", "monthly", "weekly", "daily")
RESETTING = ("monthly", "weekly", "daily")
ALL_TIME = date(1970, 1, 1)
"""The one period of the `all` window."""

FUTURE_SKEW = timedelta(minutes=5)
"""How far ahead of our clock an occurred_at may be before we call it a client bug."""

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_EXAMPLES = {"all": "all", "monthly": "2026-12", "weekly": "2026-W49", "daily": "2026-12-01"}


def period_start(window: str, moment: datetime) -> date:
    """The first day of the period of `window` that `moment` falls in."""
    day = moment.astimezone(UTC).date()
    if window == "monthly":
        return day.replace(day=1)
    if window == "weekly":
        return day - timedelta(days=day.weekday())
    if window == "daily":
        return day
    return ALL_TIME


def previous_period(window: str, start: date) -> date:
    """The period before the one starting on `start` (the `all` window has only one)."""
    if window == "monthly":
        return (start - timedelta(days=1)).replace(day=1)
    if window == "weekly":
        return start - timedelta(days=7)
    if window == "daily":
        return start - timedelta(days=1)
    return ALL_TIME


def live_periods(window: str, now: datetime) -> tuple[date, ...]:
    """The periods that accept events and are served from Redis: the current and the previous
    one (the `all` window: its only one)."""
    current = period_start(window, now)
    if window == "all":
        return (current,)
    return current, previous_period(window, current)


@functools.lru_cache(maxsize=4096)
def period_label(window: str, start: date) -> str:
    # Called for every event of every batch answer; there are only a few live periods.
    if window == "monthly":
        return f"{start.year:04d}-{start.month:02d}"
    if window == "weekly":
        year, week, _ = start.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if window == "daily":
        return start.isoformat()
    return "all"


def parse_period(window: str, text: str, field: str = "period") -> date:
    """A period label of `window` -> the date it starts on; 422 naming `field` if it is not one."""
    try:
        if window == "all" and text == "all":
            return ALL_TIME
        if window == "monthly" and (m := _MONTH.match(text)):
            return date(int(m.group(1)), int(m.group(2)), 1)
        if window == "weekly" and (m := _WEEK.match(text)):
            return date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
        if window == "daily" and (m := _DAY.match(text)):
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        pass
    raise InvalidInput(field, f"must be a {window} period like {_EXAMPLES.get(window, 'all')}, got {text!r}")


@functools.lru_cache(maxsize=65536)
def board_period(board: str, window: str, start: date) -> str:
    return f"{board}:{window}:{period_label(window, start)}"


def split_board_period(key: str) -> tuple[str, str, str]:
    """'<board>:<window>:<label>' -> (board, window, label)."""
    board, window, label = key.split(":")
    return board, window, label


def describe(key: str) -> str:
    """A board period as answers name it: its label for the original board's months
    (as before there were boards), else "<board> <window> <label>"."""
    board, window, label = split_board_period(key)
    return label if (board, window) == ("global", "monthly") else f"{board} {window} {label}"


def window_of(key: str) -> str:
    return split_board_period(key)[1]


def label_of(key: str) -> str:
    return split_board_period(key)[2]


def start_of(key: str) -> date:
    _, window, label = split_board_period(key)
    return parse_period(window, label)


# -- the original board's months --------------------------------------------------------


def month_start(moment: datetime) -> date:
    return period_start("monthly", moment)


def month_label(month: date) -> str:
    return period_label("monthly", month)


def previous_month(month: date) -> date:
    return previous_period("monthly", month)


def parse_month(text: str, field: str = "month") -> date:
    match = _MONTH.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise InvalidInput(field, f"must be YYYY-MM (e.g. 2026-11), got {text!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


def live_months(now: datetime) -> tuple[date, date]:
    """The months that accept events and are served from Redis: current and previous."""
    current, previous = live_periods("monthly", now)
    return current, previous
