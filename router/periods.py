"""Monthly periods (UTC). An event belongs to the month of its occurred_at."""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta

from router.errors import InvalidInput

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
FUTURE_SKEW = timedelta(minutes=5)
"""How far ahead of our clock an occurred_at may be before we call it a client bug."""


def month_start(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


@functools.lru_cache(maxsize=64)
def month_label(month: date) -> str:
    # Called for every event of every batch answer; there are only a few months.
    return f"{month.year:04d}-{month.month:02d}"


def previous_month(month: date) -> date:
    return (month - timedelta(days=1)).replace(day=1)


def parse_month(text: str, field: str = "month") -> date:
    match = _MONTH.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise InvalidInput(field, f"must be YYYY-MM (e.g. 2026-11), got {text!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


def live_months(now: datetime) -> tuple[date, date]:
    """The months that accept events and are served from Redis: current and previous."""
    current = month_start(now)
    return current, previous_month(current)
